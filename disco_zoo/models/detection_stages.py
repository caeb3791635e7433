"""The stages a torchvision detector's forward is cut into, shared by every staged detector.

Why: DISCO splits a detector's backbone, its neck (FPN or extra layers) and its heads (a
conv DAG torch.fx traces) and nothing else; the transform before them and the anchors,
box decoding and NMS after them run on the root (:mod:`disco_zoo.graph.stages`). The
first two stages are the same for every torchvision detector that has ``transform``,
``backbone`` and ``head`` (FCOS, SSD, RetinaNet): :class:`StagedDetector` gives them, and
each model file gives its own ``after_core`` (its anchors and post-processing) and
``preprocess_at_size``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from disco_zoo.errors import DiscoZooError

__all__ = ["StagedDetector", "DetectorCore", "DetectionContext", "HeadOutputs", "check_boxes"]

HeadOutputs = tuple[dict[str, torch.Tensor], list[tuple[int, int]]]


@dataclass
class DetectionContext:
    """What the root keeps from the pre-processing for the post-processing: the batch as
    the transform made it (its padded size and each image's resized size: the anchors and
    the box decoding read them), the original sizes the boxes are mapped back to, and the
    transformed targets (train mode)."""

    images: ImageList
    original_sizes: list[tuple[int, int]]
    targets: list[dict[str, torch.Tensor]] | None


class DetectorCore(nn.Module):
    """A detector's backbone (with its FPN or extra layers) + heads: the transformed image
    tensor in; the heads' outputs (per location or default box, levels joined) and each
    feature map's (height, width) out. The sizes are metadata, the same on every node (the
    root's anchors need them). It holds the detector's own modules under their own names,
    so a partition of it names the detector's layers."""

    def __init__(self, backbone: nn.Module, head: nn.Module, cfg: Any = None) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.pretrained_cfg = cfg

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        features = list(self.backbone(x).values())
        return self.head(features), [(f.shape[-2], f.shape[-1]) for f in features]


def check_boxes(targets: list[dict[str, torch.Tensor]]) -> None:
    """Boxes without area make the detection losses NaN: a clear error instead (as
    torchvision asserts)."""
    for index, target in enumerate(targets):
        boxes = target["boxes"]
        bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if bad.any():
            raise DiscoZooError(f"image {index}'s target has a box without area {boxes[bad][0].tolist()}; boxes "
                                "are [x1, y1, x2, y2] with x2 > x1 and y2 > y1")


class StagedDetector:
    """The stages a torchvision detector class gains when mixed in first
    (``class StagedFCOS(StagedDetector, FCOS)``): ``before_core`` (its own transform),
    ``traced_core`` (:class:`DetectorCore` over its modules) and ``forward``, the three in a
    row; the detector class gives ``after_core``."""

    def traced_core(self) -> DetectorCore:
        core = DetectorCore(self.backbone, self.head, getattr(self, "pretrained_cfg", None))
        core.training = self.training  # a view: its children keep their own mode
        return core

    def before_core(self, images: Any, targets: list[dict[str, torch.Tensor]] | None = None
                    ) -> tuple[torch.Tensor, DetectionContext]:
        """The model's transform of a list (or a batch tensor) of [0, 1] images (and their
        targets' boxes, resized alike)."""
        original = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        image_list, targets = self.transform(images, targets)
        if targets is not None:
            check_boxes(targets)
        return image_list.tensors, DetectionContext(image_list, original, targets)

    def forward(self, images: Any, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        x, context = self.before_core(images, targets)
        return self.after_core(self.traced_core()(x), context)
