"""torchvision's SSD (SSDlite) with its forward cut at its natural seams, so DISCO can split the middle.

Why: as for FCOS (:mod:`disco_zoo.models.staged_fcos`), DISCO splits the backbone, its
extra layers and the heads (a conv DAG torch.fx traces) and nothing else; the transform
before them and the default boxes, matching, box decoding and NMS after them run on the
root (:mod:`disco_zoo.graph.stages`). :class:`StagedSSD` is torchvision's ``SSD`` whose
``forward`` is the three stages in a row:

* ``before_core``: the model's own transform (normalise, resize to its fixed size, batch);
* ``traced_core``: backbone + extras + heads
  (:class:`~disco_zoo.models.detection_stages.DetectorCore`), the transformed image tensor
  in, the heads' outputs and the feature maps' sizes out;
* ``after_core``: torchvision's default box generator, then SSD's anchor matching and
  ``compute_loss`` (train mode) or ``postprocess_detections`` and ``transform.postprocess``
  (eval mode).

SSD's transform resizes every image to one fixed size (``fixed_size``, the size the model
was built for); ``preprocess_at_size`` runs it at another size instead (what a model built
for that size has), which is how the accounting, the timings and the runtime measure it at
a deployment size (:func:`disco_zoo.graph.stages.set_input_shape`).

Every stage calls torchvision's code; nothing is forked but the few lines of
``SSD.forward`` that match default boxes to targets (torchvision's own matcher and IoU),
and ``forward`` returns what ``SSD.forward`` returns (losses in train mode,
``[{boxes, labels, scores}]`` in eval mode). Its state dict is SSD's, so SSD weights load
as they are.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torchvision.models.detection.ssd import SSD
from torchvision.ops import boxes as box_ops

from disco_zoo.errors import DiscoZooError
from disco_zoo.models.detection_stages import DetectionContext, HeadOutputs, StagedDetector

__all__ = ["StagedSSD"]


class StagedSSD(StagedDetector, SSD):
    """torchvision's SSD, its forward in three stages (see the module docstring)."""

    def classifier_trunk(self) -> nn.Module:
        """The backbone's layers in the layout of the MobileNet ``features`` they were cut
        from, the same module objects (so loading into it loads into the detector): SSDlite's
        extractor holds ``features[:c4]`` plus the C4 block's expansion, then the rest of
        that block and ``features[c4 + 1:]`` (torchvision's ``SSDLiteFeatureExtractorMobileNet``).
        A classifier's (or a segmenter's) MobileNet trunk then starts the detector's
        (``train --init-backbone``); the extra layers and heads stay as initialised."""
        head, tail = self.backbone.features
        c4_block = nn.Module()
        c4_block.block = nn.Sequential(head[-1], *tail[0])
        return nn.Sequential(*head[:-1], c4_block, *tail[1:])

    def preprocess_at_size(self, height: int, width: int) -> Callable[[], None]:
        """Run at ``height`` x ``width``: the transform's ``fixed_size`` (SSD's, width
        first) and ``min_size``/``max_size`` become what a model built for that size has
        (``SSD(size=(width, height))``), so an image of that size is not resized and any
        other is resized to it; returns what restores the previous sizes. Nothing else in
        SSD depends on the size: its layers are convolutions and its default boxes follow
        the feature maps' sizes and the image's."""
        transform = self.transform
        before = (transform.min_size, transform.max_size, transform.fixed_size)
        transform.min_size, transform.max_size = (min(height, width),), max(height, width)
        transform.fixed_size = (width, height)

        def undo() -> None:
            transform.min_size, transform.max_size, transform.fixed_size = before

        return undo

    def after_core(self, outputs: HeadOutputs, context: DetectionContext) -> Any:
        """torchvision's default boxes, then its losses (train mode) or its decoded, NMS-ed
        boxes in the original images' coordinates (eval mode), from the heads' outputs."""
        head_outputs, level_sizes = outputs
        like = head_outputs["cls_logits"]
        # the default box generator reads only the maps' sizes, dtype and device
        levels = [like.new_empty((0, 0, int(h), int(w))) for h, w in level_sizes]
        anchors = self._anchor_generator()(context.images, levels)
        if self.training:
            if context.targets is None:
                raise DiscoZooError("a detector in train mode needs targets (boxes and labels per image) for its "
                                    "losses; call .eval() to predict")
            matched_idxs = self._matched_idxs(anchors, context.targets)
            return self.compute_loss(context.targets, head_outputs, anchors, matched_idxs)
        detections = self.postprocess_detections(head_outputs, anchors, context.images.image_sizes)
        return self.transform.postprocess(detections, context.images.image_sizes, context.original_sizes)

    def _matched_idxs(self, anchors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Each default box's target (-1: background), as ``SSD.forward`` matches them
        (``compute_loss`` takes them; torchvision computes them inline in its forward)."""
        matched = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            if targets_per_image["boxes"].numel() == 0:
                matched.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64,
                                          device=anchors_per_image.device))
                continue
            match_quality_matrix = box_ops.box_iou(targets_per_image["boxes"], anchors_per_image)
            matched.append(self.proposal_matcher(match_quality_matrix))
        return matched

    def _anchor_generator(self) -> nn.Module:
        """The default box generator, its width-height pairs made anew should they be on
        the meta device: they are plain attributes, in no state dict or shard, so a node
        model built on the meta device gets no real ones from its shard. (torchvision
        makes them on the CPU by name, so today they are real; this keeps it so.)"""
        generator = self.anchor_generator
        if any(pair.is_meta for pair in generator._wh_pairs):
            generator._wh_pairs = generator._generate_wh_pairs(len(generator.aspect_ratios))
        return generator
