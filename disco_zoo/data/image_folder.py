"""ImageNet-style folders (``root/<class>/<image>``) with the usual preprocessing.

Evaluation: resize the short side to size / crop_pct, centre crop, normalise; training:
random resized crop and horizontal flip. Wraps torchvision's ImageFolder so every
format it reads (PNG, JPEG, ...) works.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch.utils.data import DataLoader

from disco_zoo.errors import DiscoZooError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "image_transform", "image_folder_dataset", "image_folder_loader"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_transform(
    size: int = 224,
    train: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
):
    from torchvision import transforms as T

    if train:
        steps = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(size / crop_pct))), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])  # ImageFolder loads RGB


def image_folder_dataset(root: Path | str, size: int = 224, train: bool = False, **kwargs):
    """torchvision ImageFolder with :func:`image_transform`; a clear error for a bad folder."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DiscoZooError(f"image folder {root} does not exist")
    try:
        return ImageFolder(str(root), transform=image_transform(size, train, **kwargs))
    except (FileNotFoundError, RuntimeError) as err:
        raise DiscoZooError(f"{root} is not an ImageFolder (root/<class>/<image>): {err}") from err


def image_folder_loader(
    root: Path | str, size: int = 224, batch_size: int = 32, train: bool = False, seed: int = 0, **kwargs
) -> DataLoader:
    import torch

    ds = image_folder_dataset(root, size, train, **kwargs)
    return DataLoader(ds, batch_size=batch_size, shuffle=train, generator=torch.Generator().manual_seed(seed))
