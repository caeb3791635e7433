"""ImageNet-style folders (``root/<class>/<image>``) with the usual preprocessing.

Evaluation: resize the short side to size / crop_pct, centre crop, normalise; training:
random resized crop and horizontal flip. Wraps torchvision's ImageFolder so every
format it reads (PNG, JPEG, ...) works. A model's own preprocessing (its config's
mean, std, interpolation, crop_pct) is passed in by whoever knows the model; the
ImageNet values are only the defaults for a model trained here on a folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import DataLoader, Subset

from disco_zoo.errors import DiscoZooError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EVAL_CROP_PCT",
    "DEFAULT_INTERPOLATION",
    "image_transform",
    "image_folder_dataset",
    "image_folder_loader",
    "check_classes",
    "load_rgb",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_PCT = 0.875  # the usual ImageNet evaluation crop
DEFAULT_INTERPOLATION = "bilinear"


def _interpolation(name: str) -> Any:
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError:
        known = ", ".join(m.value for m in InterpolationMode)
        raise DiscoZooError(f"unknown interpolation {name!r}; use one of {known}") from None


def image_transform(
    size: int = 224,
    train: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = EVAL_CROP_PCT,
    interpolation: str = DEFAULT_INTERPOLATION,
):
    from torchvision import transforms as T

    mode = _interpolation(interpolation)
    if train:
        steps = [T.RandomResizedCrop(size, interpolation=mode), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(int(round(size / crop_pct)), interpolation=mode), T.CenterCrop(size)]
    return T.Compose([*steps, T.ToTensor(), T.Normalize(list(mean), list(std))])  # ImageFolder loads RGB


def load_rgb(path: str) -> Any:
    """One image file as RGB; a corrupt or non-image file is a clear error naming it
    (PIL's own exception would surface as a traceback from inside the loader)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DiscoZooError(f"{path} is not a readable image ({err}); remove or replace it") from None


def image_folder_dataset(root: Path | str, size: int = 224, train: bool = False, **kwargs: Any):
    """torchvision ImageFolder with :func:`image_transform`; a clear error for a bad folder."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    if not root.is_dir():
        raise DiscoZooError(f"image folder {root} does not exist")
    try:
        return ImageFolder(str(root), transform=image_transform(size, train, **kwargs), loader=load_rgb)
    except (FileNotFoundError, RuntimeError) as err:
        raise DiscoZooError(f"{root} is not an ImageFolder (root/<class>/<image>): {err}") from err


def image_folder_loader(
    root: Path | str, size: int = 224, batch_size: int = 32, train: bool = False, seed: int = 0,
    limit: int | None = None, **kwargs: Any,
) -> DataLoader:
    """A loader over :func:`image_folder_dataset` (shuffled by ``seed`` when training);
    ``limit`` keeps the first ``limit`` images (quick runs). ``loader.dataset.classes``
    names the classes either way."""
    import torch

    ds = image_folder_dataset(root, size, train, **kwargs)
    if limit is not None:
        classes = ds.classes
        ds = Subset(ds, range(min(limit, len(ds))))
        ds.classes = classes  # type: ignore[attr-defined]
    return DataLoader(ds, batch_size=batch_size, shuffle=train, generator=torch.Generator().manual_seed(seed))


def _few(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def check_classes(found: Sequence[str], expected: Sequence[str] | None, where: str, expected_from: str,
                  expected_count: int | None = None) -> None:
    """Refuse a folder whose classes (its sub-folder names, sorted) are not the model's:
    label i must mean the same class to the folder and to the model's output i.
    Without ``expected`` names, at least the count must be ``expected_count``."""
    found = list(found)
    if expected is not None and found != list(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        why = f"missing [{_few(missing)}], unknown [{_few(extra)}]" if missing or extra else "same names, another order"
        raise DiscoZooError(
            f"{where}'s classes do not match the class_names of {expected_from} ({why}); give a folder with one "
            f"sub-folder per class, named {_few(expected)}."
        )
    if expected is None and expected_count is not None and len(found) != expected_count:
        raise DiscoZooError(
            f"{where} has {len(found)} classes but {expected_from} has {expected_count} outputs (and no "
            "class_names to match them by); give a folder with one sub-folder per class of the model."
        )
