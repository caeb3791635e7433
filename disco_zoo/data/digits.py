"""scikit-learn's handwritten digits (1797 real 8x8 images) as a small image benchmark.

The split is fixed by ``seed`` (stratified 70/15/15 train/val/test), images are
upscaled bilinearly to ``size`` x ``size``, repeated to 3 channels and normalised
with the mean/std below, so ImageNet-shaped models run on them unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DIGITS_NAME", "DIGITS_MEAN", "DIGITS_STD", "DIGITS_CLASSES", "DIGITS_INTERPOLATION", "NUM_CLASSES",
           "digits_dataset", "digits_loaders"]

# Pixel statistics of the whole set after scaling to [0, 1] (values 0..16 / 16).
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3760
NUM_CLASSES = 10
DIGITS_NAME = "digits"  # what ``--data`` calls the embedded set, and a folder's ``dataset``
DIGITS_CLASSES = tuple(str(digit) for digit in range(NUM_CLASSES))  # label i is the digit i
DIGITS_INTERPOLATION = "bilinear"  # how the 8x8 images are upscaled
SPLITS = ("train", "val", "test")


def _split_indices(labels, seed: int) -> dict[str, list[int]]:
    from sklearn.model_selection import train_test_split

    idx = list(range(len(labels)))
    train, rest = train_test_split(idx, test_size=0.3, random_state=seed, stratify=labels)
    val, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=[labels[i] for i in rest])
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def digits_dataset(split: str = "train", size: int = 32, seed: int = 0) -> TensorDataset:
    """(images float32 [n, 3, size, size], labels int64 [n]) of one split."""
    from sklearn.datasets import load_digits

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = load_digits()
    labels = data.target.tolist()
    idx = _split_indices(labels, seed)[split]
    images = torch.tensor(data.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode=DIGITS_INTERPOLATION, align_corners=False)
    images = ((images - DIGITS_MEAN) / DIGITS_STD).repeat(1, 3, 1, 1).contiguous()
    return TensorDataset(images, torch.tensor(data.target[idx], dtype=torch.long))


def digits_loaders(
    size: int = 32, batch_size: int = 64, seed: int = 0, limit: int | None = None
) -> dict[str, DataLoader]:
    """train (shuffled by a generator seeded with ``seed``), val and test loaders.

    ``limit`` keeps the first ``limit`` images of each split (quick runs and tests).
    """
    loaders = {}
    for split in SPLITS:
        ds = digits_dataset(split, size, seed)
        if limit is not None:
            ds = TensorDataset(*(t[:limit] for t in ds.tensors))
        gen = torch.Generator().manual_seed(seed)
        loaders[split] = DataLoader(ds, batch_size=batch_size, shuffle=split == "train", generator=gen)
    return loaders


@lru_cache(maxsize=None)
def digits_split_sizes() -> dict[str, int]:
    """Images per split, from the split code itself (8x8: no resampling)."""
    return {split: len(digits_dataset(split, size=8)) for split in SPLITS}
