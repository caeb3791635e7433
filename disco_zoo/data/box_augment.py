"""Train-time augmentation of detection samples: torchvision's SSD recipe without the flip.

Why: 600 embedded canvases are few, and a 3.9M-parameter SSDlite memorises them (train
loss 0.04 in 12 epochs) long before its test AP stops rising; every DISCO pruning step
then has to be re-learned from the same memorised images. The SSD paper's augmentation
(Liu et al. 2016, sec. 3.6), as torchvision's detection references build it, makes
every epoch new images: photometric distortion, zoom-out (the image placed in a larger
canvas, so objects shrink) and the min-IoU random crop (objects grow; boxes whose centre
leaves the crop are dropped, the rest clipped to it). No horizontal flip: a mirrored
digit is another glyph, or none.

The transforms draw from torch's global generator, which :func:`disco_zoo.train.fit`
seeds, so augmented training stays deterministic under ``--seed``.
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["ZOOM_FILL", "ZOOM_SIDES", "MIN_BOX_SIDE", "box_augmentation", "augment_sample"]

ZOOM_FILL = 0.15  # zoom-out background, in [0, 1]: mid-dark, like the canvases' gradients
ZOOM_SIDES = (1.0, 1.5)  # zoom-out canvas side / image side
MIN_BOX_SIDE = 2.0  # pixels: a box clipped thinner than this is dropped


def box_augmentation() -> Any:
    """The augmentation pipeline (a torchvision ``transforms.v2`` transform)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: ZOOM_FILL, "others": 0}, side_range=ZOOM_SIDES, p=0.5),
        v2.RandomIoUCrop(),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=MIN_BOX_SIDE),
    ])


def augment_sample(transform: Any, image: torch.Tensor, target: dict[str, Any]
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
    """``transform`` applied to one (image [3, H, W] in [0, 1], target) sample; the target's
    other keys (``image_id``) pass through unchanged."""
    from torchvision import tv_tensors

    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:]))
    out_image, out = transform(tv_tensors.Image(image), {"boxes": boxes, "labels": target["labels"]})
    return out_image.as_subclass(torch.Tensor), {
        **target, "boxes": out["boxes"].as_subclass(torch.Tensor).float(), "labels": out["labels"]}
