"""Mask folders (ADE20K/Cityscapes style): ``images/*`` and ``masks/*.png`` matched by stem.

A mask is a single-channel PNG of uint8 class ids (``ignore_index``, 255, marks pixels
that count for nothing), the same size as its image. The optional ``classes.txt`` next to
the split folders names class id i on line i. This is the loader a user points
``--data PATH`` at, and the embedded digit canvases are read through it too.

Everything that would make a model fail or a metric lie is refused with one line naming
the file: image and mask stems that do not pair up, a mask of another size than its
image, an image side the model cannot take (not a multiple of its size divisor), images
of different sizes in one split (they are batched as they are, never resized, so masks
stay exact), and mask ids outside the classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from disco_zoo.errors import DiscoZooError

__all__ = ["IGNORE_INDEX", "image_size", "IMAGE_SUFFIXES", "CLASSES_FILE", "MaskFolder", "read_class_names", "mask_folder_loader",
           "load_mask", "channel_stats"]

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
CLASSES_FILE = "classes.txt"


def _few(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def read_class_names(root: Path | str) -> tuple[str, ...] | None:
    """The names in ``root/classes.txt`` (line i names class id i), or None without one."""
    path = Path(root) / CLASSES_FILE
    if not path.is_file():
        return None
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if not names:
        raise DiscoZooError(f"{path} names no classes; write one class name per line (line i is mask id i).")
    return names


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    for needed in (images_dir, masks_dir):
        if not needed.is_dir():
            raise DiscoZooError(f"{needed} is missing; a mask folder holds images/ and masks/ (one PNG of class ids "
                                "per image, same file stem).")
    images = {p.stem: p for p in sorted(images_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(masks_dir.iterdir()) if p.suffix.lower() == ".png"}
    if not images:
        raise DiscoZooError(f"{images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    missing, extra = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if missing:
        raise DiscoZooError(f"{masks_dir} has no mask for {len(missing)} image(s) of {images_dir} "
                            f"({_few(missing)}); add masks/<stem>.png for each image or remove the image.")
    if extra:
        raise DiscoZooError(f"{masks_dir} has {len(extra)} mask(s) with no image in {images_dir} "
                            f"({_few(extra)}); remove them or add the images (matched by file stem).")
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, or a clear error for an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DiscoZooError(f"{path} is not a readable image ({err}); remove or replace it") from None


def _check_sizes(pairs: list[tuple[Path, Path]], size_divisor: int) -> tuple[int, int]:
    """The split's one (height, width): every mask its image's size, every side a multiple of ``size_divisor``."""
    first = image_size(pairs[0][0])
    for image_path, mask_path in pairs:
        size, mask_size = image_size(image_path), image_size(mask_path)
        if mask_size != size:
            raise DiscoZooError(f"{mask_path} is {mask_size[0]}x{mask_size[1]} but its image {image_path} is "
                                f"{size[0]}x{size[1]}; a mask must have its image's size.")
        if size[0] % size_divisor or size[1] % size_divisor:
            raise DiscoZooError(f"{image_path} is {size[0]}x{size[1]}; the model takes sides that are multiples of "
                                f"{size_divisor}: crop or pad the image and its mask to such a size.")
        if size != first:
            raise DiscoZooError(f"{image_path} is {size[0]}x{size[1]} but {pairs[0][0]} is {first[0]}x{first[1]}; "
                                "one split is batched as it is, so crop its images and masks to one size.")
    return first[1], first[0]


def load_mask(path: Path, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """A mask PNG as uint8 class ids; another mode than 8-bit single channel, or an id
    outside ``0..num_classes-1`` (other than ``ignore_index``), is a clear error."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ("L", "P"):
            raise DiscoZooError(f"{path} is a {image.mode} image; a mask is a single-channel 8-bit PNG of class ids "
                                "(mode L or P).")
        mask = np.array(image, dtype=np.uint8)
    bad = (mask >= num_classes) & (mask != ignore_index)
    if bad.any():
        values = sorted(int(v) for v in np.unique(mask[bad]))
        raise DiscoZooError(f"{path} holds class id(s) {_few([str(v) for v in values])} outside 0..{num_classes - 1} "
                            f"(and {ignore_index}, ignored); fix the mask or train with classes.txt naming "
                            "every class.")
    return mask


class MaskFolder(Dataset):
    """(normalised float image [3, H, W], int64 mask [H, W]) pairs of one split folder.

    ``flip``: a random horizontal flip of image and mask together (exact for masks);
    off where mirror images are other things (handwritten digits).
    """

    def __init__(self, folder: Path | str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                 size_divisor: int = 32, flip: bool = False, ignore_index: int = IGNORE_INDEX) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DiscoZooError(f"mask folder {self.folder} does not exist")
        self.pairs = _pairs(self.folder)
        self.size = _check_sizes(self.pairs, size_divisor)
        self.num_classes, self.ignore_index, self.flip = num_classes, ignore_index, flip
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from disco_zoo.data.image_folder import load_rgb

        image_path, mask_path = self.pairs[index]
        image = torch.from_numpy(np.array(load_rgb(str(image_path)), dtype=np.uint8)).permute(2, 0, 1)
        mask = torch.from_numpy(load_mask(mask_path, self.num_classes, self.ignore_index)).long()
        image = (image.float() / 255.0 - self.mean) / self.std
        if self.flip and bool(torch.rand(()) < 0.5):  # torch's generator: seeded by the training loop
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def mask_folder_loader(folder: Path | str, num_classes: int, mean: Sequence[float], std: Sequence[float],
                       batch_size: int = 16, train: bool = False, seed: int = 0, limit: int | None = None,
                       size_divisor: int = 32, flip: bool = False) -> DataLoader:
    """A loader over :class:`MaskFolder` (shuffled by ``seed`` and flipped when training
    and ``flip``); ``limit`` keeps the first ``limit`` pairs (quick runs). Training drops
    a last batch of a single image (BatchNorm after global pooling cannot train on one)."""
    dataset: Any = MaskFolder(folder, num_classes, mean, std, size_divisor, flip=flip and train)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    # a last training batch of one image would fail BatchNorm after global pooling (DeepLab's ASPP)
    drop_last = train and len(dataset) % batch_size == 1 and len(dataset) > 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed))


def channel_stats(folder: Path | str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (of pixels in [0, 1]) over ``folder/images``: the
    normalisation a model trained here on that split records."""
    from disco_zoo.data.image_folder import load_rgb

    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for image_path, _ in _pairs(Path(folder)):
        pixels = np.asarray(load_rgb(str(image_path)), dtype=np.float64).reshape(-1, 3) / 255.0
        total += pixels.sum(0)
        squares += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 1e-12))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)
