"""COCO detection folders: ``annotations/instances_{split}.json`` and the split's images.

This is the loader a user points ``--data PATH`` at, and the embedded digit boxes are
read through it too. An image's ``file_name`` is looked up in ``PATH/{split}/images``,
else ``PATH/{split}``. Samples are what torchvision's detection models take: a float
image ``[3, H, W]`` in [0, 1] (the models normalise it themselves) and a target dict with
``boxes`` (N, 4) float xyxy, ``labels`` (N,) int64 (the category ids, so a category id is
a model output index; 0 is background) and ``image_id``. :func:`collate` keeps lists
(images may differ in size).

Everything that would make training fail late, or a metric lie, is refused at load
time with one line naming the file: malformed JSON, missing keys, an empty annotation
list, an annotation of an unknown image or category id, a box outside its image or of no
width or height, a missing image file, or an image whose size is not the JSON's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from disco_zoo.data.mask_folder import image_size
from disco_zoo.errors import DiscoZooError

__all__ = ["BACKGROUND_NAME", "UNUSED_NAME", "CocoAnnotations", "read_annotations", "annotation_path",
           "CocoFolder", "collate", "coco_folder_loader", "check_min_size"]

BACKGROUND_NAME = "background"  # class_names[0]: the label no object has
UNUSED_NAME = "N/A"  # class_names[i] for an id no category has (COCO's ids have gaps), as torchvision names them
_EDGE_TOLERANCE = 1e-3  # pixels a box may pass the image's edge by (float rounding in exported JSON)


def annotation_path(root: Path | str, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def check_min_size(side: int, min_side: int, where: str) -> None:
    """An image side below what a detector's strides can place objects in is refused, before training."""
    if side < min_side:
        raise DiscoZooError(f"{where}: images of side {side} are too small for the detectors' strides; use a side of "
                            f"at least {min_side} (e.g. --input-size 128).")


@dataclass(frozen=True)
class CocoAnnotations:
    """One split's checked annotations: per image, its file, size and objects."""

    path: Path
    files: tuple[Path, ...]
    sizes: tuple[tuple[int, int], ...]  # (height, width) per image
    image_ids: tuple[int, ...]
    boxes: tuple[np.ndarray, ...]  # float32 (N, 4) xyxy per image
    labels: tuple[np.ndarray, ...]  # int64 (N,) category ids per image
    categories: dict[int, str]

    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each label id 0..max: background, the categories, N/A in the gaps."""
        top = max(self.categories)
        return (BACKGROUND_NAME,) + tuple(self.categories.get(i, UNUSED_NAME) for i in range(1, top + 1))


def _field(record: Any, key: str, kind: type | tuple[type, ...], path: Path, what: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DiscoZooError(f"{path}: {what} has no {key!r}; COCO {what}s need it.")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DiscoZooError(f"{path}: {what} {record.get('id', '?')} has {key} {value!r}, not a "
                            f"{getattr(kind, '__name__', 'number')}.")
    return value


def _image_dir(root: Path, split: str) -> Path:
    nested = root / split / "images"
    return nested if nested.is_dir() else root / split


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DiscoZooError(f"{path} is missing; a COCO folder holds annotations/instances_<split>.json for each "
                            "split it is read for.")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DiscoZooError(f"{path} is not valid JSON ({err}); fix or re-export it.") from None
    if not isinstance(document, dict):
        raise DiscoZooError(f"{path} holds a {type(document).__name__}; a COCO file is an object with images, "
                            "annotations and categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise DiscoZooError(f"{path} has no {key!r} list; a COCO file holds images, annotations and categories.")
    return document


def read_annotations(root: Path | str, split: str) -> CocoAnnotations:
    """One split's annotations, every fault refused with one line naming the file."""
    root = Path(root)
    path = annotation_path(root, split)
    document = _read_json(path)
    if not document["annotations"]:
        raise DiscoZooError(f"{path} has an empty annotation list; a detection split needs annotated objects.")
    if not document["categories"]:
        raise DiscoZooError(f"{path} names no categories.")
    categories: dict[int, str] = {}
    for category in document["categories"]:
        cid = _field(category, "id", int, path, "category")
        if cid < 1:
            raise DiscoZooError(f"{path}: category id {cid} is not positive; id 0 is the background.")
        if cid in categories:
            raise DiscoZooError(f"{path}: category id {cid} appears twice; category ids must be unique.")
        categories[cid] = str(_field(category, "name", str, path, "category"))
    folder = _image_dir(root, split)
    index: dict[int, int] = {}
    files, sizes = [], []
    for image in document["images"]:
        iid = _field(image, "id", int, path, "image")
        if iid in index:
            raise DiscoZooError(f"{path}: image id {iid} appears twice; image ids must be unique.")
        file = folder / _field(image, "file_name", str, path, "image")
        width, height = _field(image, "width", int, path, "image"), _field(image, "height", int, path, "image")
        if not file.is_file():
            raise DiscoZooError(f"{path}: image {iid}'s file {file} is missing; add it or remove the image.")
        if image_size(file) != (width, height):
            found = image_size(file)
            raise DiscoZooError(f"{file} is {found[0]}x{found[1]} but {path} says {width}x{height}; fix the JSON.")
        index[iid] = len(files)
        files.append(file)
        sizes.append((height, width))
    boxes: list[list[list[float]]] = [[] for _ in files]
    labels: list[list[int]] = [[] for _ in files]
    for annotation in document["annotations"]:
        aid = annotation.get("id", "?") if isinstance(annotation, dict) else "?"
        iid = _field(annotation, "image_id", int, path, "annotation")
        cid = _field(annotation, "category_id", int, path, "annotation")
        bbox = _field(annotation, "bbox", list, path, "annotation")
        if iid not in index:
            raise DiscoZooError(f"{path}: annotation {aid} is of image id {iid}, which the file does not list.")
        if cid not in categories:
            raise DiscoZooError(f"{path}: annotation {aid} has unknown category id {cid}; known: "
                                f"{', '.join(str(c) for c in sorted(categories))}.")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DiscoZooError(f"{path}: annotation {aid} has bbox {bbox!r}; a COCO bbox is [x, y, width, height].")
        x, y, w, h = (float(v) for v in bbox)
        height, width = sizes[index[iid]]
        if w <= 0 or h <= 0:
            raise DiscoZooError(f"{path}: annotation {aid} has a box of no area ({bbox}); remove it.")
        if x < -_EDGE_TOLERANCE or y < -_EDGE_TOLERANCE or x + w > width + _EDGE_TOLERANCE \
                or y + h > height + _EDGE_TOLERANCE:
            raise DiscoZooError(f"{path}: annotation {aid}'s box {bbox} lies outside its image {iid} "
                                f"({width}x{height}); clip or fix it.")
        if annotation.get("iscrowd", 0):
            continue  # crowd regions are no object to find (torchvision's COCO references drop them too)
        boxes[index[iid]].append([x, y, x + w, y + h])
        labels[index[iid]].append(cid)
    return CocoAnnotations(path, tuple(files), tuple(sizes), tuple(index),
                           tuple(np.array(b, dtype=np.float32).reshape(-1, 4) for b in boxes),
                           tuple(np.array(lab, dtype=np.int64) for lab in labels), categories)


class CocoFolder(Dataset):
    """(float image [3, H, W] in [0, 1], target dict) samples of one split, checked at construction;
    ``augment`` applies :func:`disco_zoo.data.box_augment.box_augmentation` (training only)."""

    def __init__(self, root: Path | str, split: str, augment: bool = False) -> None:
        self.annotations = read_annotations(root, split)
        self.transform: Any = None  # (image, target) -> (image, target)
        if augment:
            from functools import partial

            from disco_zoo.data.box_augment import augment_sample, box_augmentation

            self.transform = partial(augment_sample, box_augmentation())

    def __len__(self) -> int:
        return len(self.annotations.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from disco_zoo.data.image_folder import load_rgb

        found = self.annotations
        image = torch.from_numpy(np.array(load_rgb(str(found.files[index])), dtype=np.uint8)).permute(2, 0, 1)
        target = {"boxes": torch.from_numpy(found.boxes[index]), "labels": torch.from_numpy(found.labels[index]),
                  "image_id": found.image_ids[index]}
        sample = image.float() / 255.0, target
        return sample if self.transform is None else self.transform(*sample)


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """(images, targets) as lists: detection models take a list of images of any sizes."""
    return [image for image, _ in batch], [target for _, target in batch]


def coco_folder_loader(root: Path | str, split: str, batch_size: int = 8, train: bool = False, seed: int = 0,
                       limit: int | None = None, augment: bool = False) -> DataLoader:
    """A loader over :class:`CocoFolder` (shuffled by ``seed`` when training); ``limit``
    keeps the first ``limit`` images (quick runs); ``augment`` (training only) augments them."""
    if augment and not train:
        raise DiscoZooError("augmentation is for training loaders only; evaluation reads the images as they are.")
    dataset: Any = CocoFolder(root, split, augment)
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))
