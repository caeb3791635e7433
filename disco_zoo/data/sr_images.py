"""Super-resolution data: HR image folders (DIV2K/Set5 style) and the embedded photographs.

Format (what ``--data PATH`` takes): ``PATH/train/*.png`` and ``PATH/test/*.png`` hold
high-resolution images only (any format PIL reads; grey and RGBA load as RGB), with an
optional ``PATH/val/``. The low-resolution inputs are made on the fly by the standard
bicubic degradation, unless ``PATH/<split>_LR_x<scale>/`` holds them (Set5 style, one
file per HR stem); then each LR must be exactly ``HR // scale`` a side.

The degradation: the HR image is cropped so its sides divide by the scale, then
downsampled with PIL's ``Image.resize(..., Image.BICUBIC)`` on 8-bit pixels. PIL widens
the bicubic kernel by the scale when it shrinks (antialiasing), as MATLAB's ``imresize``
does, which is how DIV2K's and Set5's LR images were made; the result is 8-bit, as an LR
PNG on disk would be. The same PIL bicubic, upsampling, is the floor every model is
reported against (:func:`bicubic_upsample`).

Embedded set (``--data photos``): the real photographs that scikit-image ships and
that load offline (the ones that need a download are left out), plus scikit-learn's two
sample photographs. :data:`TEST_IMAGES` and :data:`VAL_IMAGES` are held out whole; the
rest are cut into random training patches. They are written once, in the folder format
above, to a cache folder (:func:`embedded_root`) and read back by the same loader as a
user's folder.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from disco_zoo.errors import DiscoZooError

__all__ = ["EMBEDDED_NAME", "TEST_IMAGES", "VAL_IMAGES", "TRAIN_IMAGES", "DATA_DIR_ENV", "MIN_LR_SIDE", "SRPair",
           "RandomPatches", "embedded_root", "embedded_images", "write_hr_folder", "ensure_embedded", "read_pairs",
           "make_lr", "bicubic_upsample", "to_tensor", "image_files", "whole_images"]

EMBEDDED_NAME = "photos"
# skimage.data photographs (and sklearn's sample images) that load with no download here.
# Left out: synthetic images (colorwheel, logo, phantom, blobs, horse), ``cat`` (the same
# photograph as ``chelsea``), and the ones that need pooch to fetch them.
TEST_IMAGES = ("chelsea", "coffee", "flower")  # held out whole: the reported PSNR/SSIM
VAL_IMAGES = ("rocket",)  # held out whole: the val figures of a training run
TRAIN_IMAGES = ("astronaut", "brick", "camera", "cell", "china", "clock", "coins", "grass", "gravel",
                "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "text")
_SKLEARN_IMAGES = ("china", "flower")
DATA_DIR_ENV = "DISCO_ZOO_DATA_DIR"  # where embedded sets are written (else the user cache)
MIN_LR_SIDE = 8  # a smaller LR image leaves too little after the border shave for SSIM's 11x11 window
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SRPair:
    """One HR image (cropped to a multiple of ``scale``) and its LR input, 8-bit HxWx3."""

    name: str  # the file stem
    lr: np.ndarray
    hr: np.ndarray

    @property
    def scale(self) -> int:
        return self.hr.shape[0] // self.lr.shape[0]


# -- the embedded photographs -----------------------------------------------------------


def embedded_root(name: str = EMBEDDED_NAME) -> Path:
    """``$DISCO_ZOO_DATA_DIR/<name>``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)``/disco-zoo/data/<name>``."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]) / name
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "disco-zoo" / "data" / name


def _rgb(image: np.ndarray) -> np.ndarray:
    """Grey -> three equal channels; RGBA -> RGB; always uint8."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def _load_named(name: str) -> np.ndarray:
    if name in _SKLEARN_IMAGES:
        from sklearn.datasets import load_sample_image

        return _rgb(load_sample_image(f"{name}.jpg"))
    import skimage.data

    return _rgb(getattr(skimage.data, name)())


def embedded_images() -> dict[str, dict[str, np.ndarray]]:
    """The embedded photographs by split: ``{"train": {name: HxWx3 uint8}, "val": ..., "test": ...}``."""
    splits = {"train": TRAIN_IMAGES, "val": VAL_IMAGES, "test": TEST_IMAGES}
    return {split: {name: _load_named(name) for name in names} for split, names in splits.items()}


def write_hr_folder(root: Path | str, images: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write ``root/<split>/<name>.png`` (HR only) atomically: the folder appears whole or
    not at all (written beside it, then renamed into place)."""
    from PIL import Image

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for split, named in images.items():
            (tmp / split).mkdir()
            for name, pixels in named.items():
                Image.fromarray(_rgb(pixels)).save(tmp / split / f"{name}.png")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def ensure_embedded(root: Path | None = None) -> Path:
    """The embedded set's folder, written on first use (a complete folder is reused)."""
    root = Path(root) if root is not None else embedded_root()
    expected = {"train": TRAIN_IMAGES, "val": VAL_IMAGES, "test": TEST_IMAGES}
    complete = all((root / split / f"{name}.png").is_file() for split, names in expected.items() for name in names)
    return root if complete else write_hr_folder(root, embedded_images())


# -- reading a folder -------------------------------------------------------------------


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read(path: Path) -> np.ndarray:
    from disco_zoo.data.image_folder import load_rgb

    return np.asarray(load_rgb(str(path)), dtype=np.uint8)


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to multiples of ``scale``, its bicubic LR): the standard degradation."""
    from PIL import Image

    height, width = (hr.shape[0] // scale) * scale, (hr.shape[1] // scale) * scale
    hr = np.ascontiguousarray(hr[:height, :width])
    lr = Image.fromarray(hr).resize((width // scale, height // scale), Image.BICUBIC)
    return hr, np.asarray(lr, dtype=np.uint8)


def bicubic_upsample(lr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An 8-bit LR image upsampled to ``size`` = (height, width) by PIL bicubic: the floor."""
    from PIL import Image

    return np.asarray(Image.fromarray(lr).resize((size[1], size[0]), Image.BICUBIC), dtype=np.uint8)


def _checked_pair(name: str, hr: np.ndarray, lr: np.ndarray, scale: int, lr_path: Path) -> SRPair:
    height, width = hr.shape[0] // scale, hr.shape[1] // scale
    if lr.shape[:2] != (height, width):
        raise DiscoZooError(
            f"LR/HR scale mismatch: {lr_path} is {lr.shape[1]}x{lr.shape[0]} but its HR image is "
            f"{hr.shape[1]}x{hr.shape[0]}, which at x{scale} needs a {width}x{height} LR; give LR images made at "
            f"x{scale} (or remove {lr_path.parent} to make them by bicubic downsampling).")
    return SRPair(name, np.ascontiguousarray(lr), np.ascontiguousarray(hr[:height * scale, :width * scale]))


def read_pairs(root: Path | str, split: str, scale: int, limit: int | None = None,
               min_lr_side: int = MIN_LR_SIDE) -> list[SRPair]:
    """The HR/LR pairs of ``root/<split>``: LR from ``root/<split>_LR_x<scale>`` when that
    folder exists (same stems, sizes checked), else made by :func:`make_lr`. An image whose
    LR would be under ``min_lr_side`` a side is refused by name."""
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        raise DiscoZooError(f"--data {root}: a super-resolution folder holds HR images in train/ and test/; "
                            f"{folder} is missing (or pass --data {EMBEDDED_NAME}).")
    files = image_files(folder)[:limit]
    if not files:
        raise DiscoZooError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    lr_folder = root / f"{split}_LR_x{scale}"
    lr_files = {p.stem: p for p in image_files(lr_folder)} if lr_folder.is_dir() else None
    if lr_files is not None and limit is None and set(lr_files) != {p.stem for p in files}:
        missing = sorted({p.stem for p in files} - set(lr_files))
        extra = sorted(set(lr_files) - {p.stem for p in files})
        raise DiscoZooError(f"{lr_folder} does not match {folder}: no LR for [{', '.join(missing[:5])}], "
                            f"no HR for [{', '.join(extra[:5])}]; give one LR file per HR file, with the same stem.")
    pairs = []
    for path in files:
        hr = _read(path)
        if min(hr.shape[:2]) // scale < min_lr_side:
            raise DiscoZooError(f"{path} is {hr.shape[1]}x{hr.shape[0]}: at x{scale} its LR would be under "
                                f"{min_lr_side} px a side, too small to super-resolve and score; remove it or "
                                "use a larger image.")
        if lr_files is None:
            pairs.append(SRPair(path.stem, *reversed(make_lr(hr, scale))))
        elif path.stem not in lr_files:
            raise DiscoZooError(f"{lr_folder} has no LR image for {path.name}; give one LR file per HR file.")
        else:
            pairs.append(_checked_pair(path.stem, hr, _read(lr_files[path.stem]), scale, lr_files[path.stem]))
    return pairs


def to_tensor(pixels: np.ndarray) -> Any:
    """HxWx3 uint8 -> a (1, 3, H, W) float tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div(255).unsqueeze(0)


# -- training patches -------------------------------------------------------------------


class RandomPatches:
    """A training loader: each epoch, ``patches`` seeded random (LR, HR) patch pairs in
    batches of ``batch_size``, with random flips and 90-degree rotations (EDSR's
    augmentation). LR patch (y, x, p) pairs with HR patch (s*y, s*x, s*p), so LR and HR
    stay exactly aligned. The generator is seeded once: epochs differ, runs repeat."""

    def __init__(self, pairs: list[SRPair], patch: int, patches: int, batch_size: int, seed: int) -> None:
        import torch

        for pair in pairs:
            if min(pair.lr.shape[:2]) < patch:
                raise DiscoZooError(f"training image {pair.name} has a {pair.lr.shape[1]}x{pair.lr.shape[0]} LR, "
                                    f"smaller than the {patch} px LR patch (--input-size); use a smaller patch or "
                                    "remove the image.")
        self.pairs, self.patch, self.patches, self.batch_size = pairs, patch, patches, batch_size
        self._lr = [to_tensor(p.lr)[0] for p in pairs]
        self._hr = [to_tensor(p.hr)[0] for p in pairs]
        # images are drawn in proportion to their area, so every pixel is as likely to be seen
        areas = torch.tensor([float(p.lr.shape[0] * p.lr.shape[1]) for p in pairs])
        self._weights = areas / areas.sum()
        self._generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.patches / self.batch_size)

    def _draw(self) -> tuple[Any, Any]:
        import torch

        g, p = self._generator, self.patch
        i = int(torch.multinomial(self._weights, 1, generator=g))
        lr, hr = self._lr[i], self._hr[i]
        scale = hr.shape[1] // lr.shape[1]
        y = int(torch.randint(lr.shape[1] - p + 1, (1,), generator=g))
        x = int(torch.randint(lr.shape[2] - p + 1, (1,), generator=g))
        lr_patch, hr_patch = lr[:, y:y + p, x:x + p], hr[:, y * scale:(y + p) * scale, x * scale:(x + p) * scale]
        flip, turns = bool(torch.randint(2, (1,), generator=g)), int(torch.randint(4, (1,), generator=g))
        if flip:
            lr_patch, hr_patch = lr_patch.flip(-1), hr_patch.flip(-1)
        return lr_patch.rot90(turns, (1, 2)), hr_patch.rot90(turns, (1, 2))

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        left = self.patches
        while left > 0:
            drawn = [self._draw() for _ in range(min(self.batch_size, left))]
            left -= len(drawn)
            yield torch.stack([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])


def whole_images(pairs: list[SRPair], target: Callable[[SRPair], Any]) -> list[tuple[Any, Any]]:
    """One batch per image: ((1, 3, h, w) LR tensor, ``target(pair)``), as evaluation takes them."""
    return [(to_tensor(p.lr), target(p)) for p in pairs]
