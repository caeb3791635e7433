"""Detection canvases made of scikit-learn's real handwritten digits, with exact boxes.

Why: no data set can be downloaded here, so the embedded detection set composes real
data that an installed package ships, as the segmentation canvases do
(:mod:`disco_zoo.data.digit_canvas`, whose digit pools, background and pasting this
reuses): 1-6 digits per canvas at random places and scales, later ones occluding
earlier ones. A digit's box is the tight box of its *visible* ink pixels after every
later paste, so it is exact by construction; a digit left with no visible pixel is
dropped. Train, val and test canvases draw on disjoint digit scans.

The canvases are written in the ordinary COCO layout (``split/images/*.png`` and
``annotations/instances_{split}.json``; category ids 1..10 name the digits "0".."9";
``area`` is the visible ink's pixel count, the object's segment as COCO means it) and
read back by :mod:`disco_zoo.data.coco_folder`, the loader ``--data PATH`` uses.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from disco_zoo.data.digit_canvas import (CANVAS_SEED, background, cache_dir, digit_pools, finish_canvas, paste_digit,
                                         write_digit_splits)

__all__ = ["BOXES_NAME", "BOXES_CATEGORIES", "BOXES_COUNTS", "BOXES_SIZE", "DIGITS_PER_BOX_CANVAS", "BoxCanvas",
           "visible_boxes", "make_box_canvas", "write_boxes_folder", "embedded_boxes_folder", "SPLITS"]

BOXES_NAME = "digit_boxes"  # what ``--data`` calls the embedded set, and the published folders' tag
BOXES_CATEGORIES = tuple({"id": 1 + d, "name": str(d)} for d in range(10))  # category id 1 + d is digit d
BOXES_COUNTS: Mapping[str, int] = {"train": 600, "val": 100, "test": 120}
BOXES_SIZE = 128
DIGITS_PER_BOX_CANVAS = (1, 6)  # inclusive range
FORMAT_VERSION = 1  # part of the cache folder's name: a change of the generator makes a new folder
SPLITS = ("train", "val", "test")
_STREAM = 1  # the canvases' random stream, apart from the segmentation canvases' (0)


@dataclass(frozen=True)
class BoxCanvas:
    """One canvas and its objects: boxes are xyxy pixel edges (a digit inked in columns
    3..5 spans x 3 to 6), labels the digits 0-9, areas the visible ink pixel counts."""

    image: np.ndarray  # RGB uint8 H x W x 3
    instances: np.ndarray  # int16 H x W: the paste index visible at each pixel, -1 for background
    boxes: np.ndarray  # float64 (N, 4)
    labels: np.ndarray  # int64 (N,)
    areas: np.ndarray  # int64 (N,)


def visible_boxes(instances: np.ndarray, digits: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes xyxy, labels, areas) of the pastes still visible in ``instances`` (paste k
    is digit ``digits[k]``), in paste order; fully occluded pastes are dropped."""
    boxes, labels, areas = [], [], []
    for k, digit in enumerate(digits):
        ys, xs = np.nonzero(instances == k)
        if len(ys) == 0:
            continue
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(digit)
        areas.append(len(ys))
    return (np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64),
            np.array(areas, dtype=np.int64))


def make_box_canvas(rng: np.random.Generator, scans: np.ndarray, labels: np.ndarray, pool: np.ndarray,
                    size: int = BOXES_SIZE) -> BoxCanvas:
    """One canvas with 1-6 digits drawn from ``pool`` only, and their exact visible boxes."""
    image = background(rng, size)
    instances = np.full((size, size), -1, dtype=np.int16)
    digits = []
    for k in range(rng.integers(DIGITS_PER_BOX_CANVAS[0], DIGITS_PER_BOX_CANVAS[1] + 1)):
        paste = paste_digit(rng, image, scans, labels, pool)
        side = len(paste.painted)
        instances[paste.top:paste.top + side, paste.left:paste.left + side][paste.painted] = k
        digits.append(paste.digit)
    boxes, kept, areas = visible_boxes(instances, digits)
    return BoxCanvas(finish_canvas(rng, image), instances, boxes, kept, areas)


def _write_split(folder: Path, split: str, count: int, size: int, seed: int, pool: np.ndarray,
                 scans: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, SPLITS.index(split), _STREAM])
    (folder / split / "images").mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(count):
        canvas = make_box_canvas(rng, scans, labels, pool, size)
        name = f"{i:05d}.png"
        Image.fromarray(canvas.image, mode="RGB").save(folder / split / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for box, label, area in zip(canvas.boxes, canvas.labels, canvas.areas):
            x0, y0, x1, y1 = (int(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1 + int(label),
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": int(area), "iscrowd": 0})
    document = {"images": images, "annotations": annotations, "categories": list(BOXES_CATEGORIES)}
    (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(document))


def write_boxes_folder(root: Path | str, size: int = BOXES_SIZE, counts: Mapping[str, int] = BOXES_COUNTS,
                       seed: int = CANVAS_SEED) -> Path:
    """Write the canvases as a COCO folder at ``root`` (split/images, annotations/), atomically."""
    return write_digit_splits(root, size, counts, seed, _write_split, "annotations",
                              lambda tmp: (tmp / "annotations").mkdir())


def embedded_boxes_folder(size: int = BOXES_SIZE, seed: int = CANVAS_SEED) -> Path:
    """The embedded detection canvases at ``size`` as a COCO folder in the cache, written on first use."""
    root = cache_dir() / f"{BOXES_NAME}-v{FORMAT_VERSION}-{size}px-seed{seed}"
    if not (root / "annotations").is_dir():
        write_boxes_folder(root, size, BOXES_COUNTS, seed)
    return root
