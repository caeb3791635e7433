"""Segmentation canvases made of scikit-learn's real handwritten digits, with exact masks.

Why: no data set can be downloaded here, so the embedded segmentation set composes real
data that an installed package ships. Each canvas is a noisy two-colour gradient with a
few digits (8x8 scans upscaled bilinearly to a random side) pasted at random places, so
they overlap; a digit's pixels are those whose upscaled ink is at least
:data:`INK_THRESHOLD`, and exactly those are painted and labelled, a later digit
overwriting (occluding) an earlier one. The mask is therefore exact by construction.
Mask ids: 0 = background, 1 + d = digit d.

Train, val and test canvases draw on disjoint digit scans (the 1,797 scans are split by
index, seeded, 70/15/15), so a test digit was never seen in training. Everything is
seeded. The canvases are written in the ordinary mask-folder layout
(``split/images/*.png``, ``split/masks/*.png`` of uint8 class ids, ``classes.txt``) and
read back by :mod:`disco_zoo.data.mask_folder`, the loader ``--data PATH`` uses, so the
embedded set and a user's folder go through the same code.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping, NamedTuple

import numpy as np

__all__ = ["CANVAS_NAME", "CANVAS_CLASSES", "CANVAS_COUNTS", "CANVAS_SIZE", "CANVAS_SEED", "CACHE_ENV",
           "digit_pools", "Paste", "background", "paste_digit", "finish_canvas", "make_canvas", "write_canvas_folder",
           "cache_dir", "embedded_canvas_folder"]

CANVAS_NAME = "digit_canvas"  # what ``--data`` calls the embedded set, and the published folders' tag
CANVAS_CLASSES = ("background",) + tuple(str(d) for d in range(10))  # mask id i is CANVAS_CLASSES[i]
CANVAS_SIZE = 128
CANVAS_SEED = 0  # the embedded set is one fixed set: training seeds change the model, not the data
CANVAS_COUNTS: Mapping[str, int] = {"train": 600, "val": 100, "test": 120}
CACHE_ENV = "DISCO_ZOO_CACHE"
FORMAT_VERSION = 1  # part of the cache folder's name: a change of the generator makes a new folder
INK_THRESHOLD = 0.35  # upscaled ink (0..1) at or above which a pixel belongs to the digit
DIGITS_PER_CANVAS = (3, 6)  # inclusive range
SIDE_FRACTION = (0.2, 0.45)  # a digit's side as a fraction of the canvas side
NOISE_STD = 0.04
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15}  # test gets the rest


def digit_pools(seed: int = CANVAS_SEED) -> dict[str, np.ndarray]:
    """Disjoint index sets of the 1,797 digit scans for train, val and test (seeded)."""
    from sklearn.datasets import load_digits

    count = len(load_digits().target)
    order = np.random.default_rng(seed).permutation(count)
    n_train = int(round(SPLIT_FRACTIONS["train"] * count))
    n_val = int(round(SPLIT_FRACTIONS["val"] * count))
    return {"train": np.sort(order[:n_train]), "val": np.sort(order[n_train:n_train + n_val]),
            "test": np.sort(order[n_train + n_val:])}


def _upscaled_ink(scan: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 scan (0..16) as ink in [0, 1] at ``side`` x ``side`` (bilinear, as digits.py scales)."""
    from PIL import Image

    return np.asarray(Image.fromarray((scan / 16.0).astype(np.float32), mode="F").resize((side, side), Image.BILINEAR))


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark two-colour linear gradient in a random direction (float RGB, H x W x 3)."""
    low, high = rng.uniform(0.0, 0.35, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (np.cos(angle) * xs + np.sin(angle) * ys)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    return low + (high - low) * t[..., None]


class Paste(NamedTuple):
    """Where one digit went: its window's corner and side, its inked pixels there, its digit."""

    top: int
    left: int
    painted: np.ndarray  # bool side x side: the pixels the digit painted (and so labels)
    digit: int


def paste_digit(rng: np.random.Generator, image: np.ndarray, scans: np.ndarray, labels: np.ndarray,
                pool: np.ndarray) -> Paste:
    """Paste one digit of ``pool`` at a random place and scale into ``image`` (float RGB,
    in place), over whatever is there; the detection canvases paste through this too."""
    size = image.shape[0]
    index = int(rng.choice(pool))
    side = int(rng.integers(int(SIDE_FRACTION[0] * size), int(SIDE_FRACTION[1] * size) + 1))
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    ink = _upscaled_ink(scans[index], side)
    painted = ink >= INK_THRESHOLD
    colour = rng.uniform(0.55, 1.0, size=3)
    window = image[top:top + side, left:left + side]
    window[painted] = colour * (0.6 + 0.4 * ink[painted, None])
    return Paste(top, left, painted, int(labels[index]))


def finish_canvas(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sensor noise, then the float canvas as RGB uint8."""
    image = image + rng.normal(0.0, NOISE_STD, size=image.shape)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_canvas(rng: np.random.Generator, scans: np.ndarray, labels: np.ndarray, pool: np.ndarray,
                size: int = CANVAS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One canvas: (RGB uint8 H x W x 3, mask uint8 H x W), digits drawn from ``pool`` only."""
    image = background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(rng.integers(DIGITS_PER_CANVAS[0], DIGITS_PER_CANVAS[1] + 1)):
        paste = paste_digit(rng, image, scans, labels, pool)
        side = len(paste.painted)
        mask[paste.top:paste.top + side, paste.left:paste.left + side][paste.painted] = 1 + paste.digit
    return finish_canvas(rng, image), mask


def _write_split(folder: Path, split: str, count: int, size: int, seed: int, pool: np.ndarray,
                 scans: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, ("train", "val", "test").index(split)])
    (folder / split / "images").mkdir(parents=True)
    (folder / split / "masks").mkdir()
    for i in range(count):
        image, mask = make_canvas(rng, scans, labels, pool, size)
        Image.fromarray(image, mode="RGB").save(folder / split / "images" / f"{i:05d}.png")
        Image.fromarray(mask, mode="L").save(folder / split / "masks" / f"{i:05d}.png")


def write_folder_atomically(root: Path | str, fill: Callable[[Path], None], marker: str) -> Path:
    """Make ``root`` with ``fill(tmp)`` in a temporary sibling, then rename it into place, so
    ``root`` is either absent or complete; where another process finished it first (its
    ``marker`` file or folder exists), that one is kept."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / marker).exists():  # not a concurrent writer's finished folder
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


SplitWriter = Callable[..., None]  # (folder, split, count, size, seed, pool, scans, labels)


def write_digit_splits(root: Path | str, size: int, counts: Mapping[str, int], seed: int, write_split: SplitWriter,
                       marker: str, layout: Callable[[Path], None] = lambda tmp: None) -> Path:
    """Write every split's canvases with ``write_split`` (after ``layout`` made the folder's
    fixed files) into ``root``, atomically; the mask and the COCO folders differ only there."""
    from sklearn.datasets import load_digits

    if size < 16:
        raise ValueError(f"canvas size must be at least 16 pixels, got {size}")
    digits = load_digits()
    pools = digit_pools(seed)

    def fill(tmp: Path) -> None:
        layout(tmp)
        for split, count in counts.items():
            write_split(tmp, split, count, size, seed, pools[split], digits.images, digits.target)

    return write_folder_atomically(root, fill, marker)


def write_canvas_folder(root: Path | str, size: int = CANVAS_SIZE, counts: Mapping[str, int] = CANVAS_COUNTS,
                        seed: int = CANVAS_SEED) -> Path:
    """Write the canvases as a mask folder at ``root`` (train/val/test, classes.txt), atomically."""
    def layout(tmp: Path) -> None:
        (tmp / "classes.txt").write_text("\n".join(CANVAS_CLASSES) + "\n")

    return write_digit_splits(root, size, counts, seed, _write_split, "classes.txt", layout)


def cache_dir() -> Path:
    """Where generated data sets live: ``$DISCO_ZOO_CACHE``, else
    ``$XDG_CACHE_HOME/disco-zoo/data``, else ``~/.cache/disco-zoo/data``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "disco-zoo" / "data"


def embedded_canvas_folder(size: int = CANVAS_SIZE, seed: int = CANVAS_SEED) -> Path:
    """The embedded canvases at ``size`` as a mask folder in the cache, written on first use."""
    root = cache_dir() / f"{CANVAS_NAME}-v{FORMAT_VERSION}-{size}px-seed{seed}"
    if not (root / "classes.txt").is_file():
        write_canvas_folder(root, size, CANVAS_COUNTS, seed)
    return root
