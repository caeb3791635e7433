"""torchvision's FCOS with its forward cut at its natural seams, so DISCO can split the middle.

Why: DISCO splits the backbone, the FPN and the heads (a conv DAG torch.fx traces) and
nothing else; the transform before them and the anchors, box decoding and NMS after them
run on the root (:mod:`disco_zoo.graph.stages`). :class:`StagedFCOS` is torchvision's
``FCOS`` whose ``forward`` is the three stages in a row:

* ``before_core``: the model's own transform (normalise, resize, batch);
* ``traced_core``: backbone + FPN + heads
  (:class:`~disco_zoo.models.detection_stages.DetectorCore`), the transformed image tensor
  in, the heads' outputs and the pyramid's level sizes out;
* ``after_core``: torchvision's anchor generator, then its ``compute_loss`` (train mode)
  or ``postprocess_detections`` and ``transform.postprocess`` (eval mode).

Its transform resizes every image to the size the model was built for (``min_size`` =
``max_size`` = the training canvas); ``preprocess_at_size`` runs it at another size instead,
which is how the accounting, the timings and the runtime measure it at a deployment size
(640x640) rather than at its canvas (:func:`disco_zoo.graph.stages.set_input_shape`).

Every stage calls torchvision's code; nothing is forked, and ``forward`` returns what
``FCOS.forward`` returns (losses in train mode, ``[{boxes, labels, scores}]`` in eval
mode). Its state dict is FCOS's, so FCOS weights load as they are.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn
from torchvision.models.detection.fcos import FCOS

from disco_zoo.errors import DiscoZooError
from disco_zoo.models.detection_stages import DetectionContext, HeadOutputs, StagedDetector

__all__ = ["StagedFCOS"]


class StagedFCOS(StagedDetector, FCOS):
    """torchvision's FCOS, its forward in three stages (see the module docstring)."""

    def preprocess_at_size(self, height: int, width: int) -> Callable[[], None]:
        """Run at ``height`` x ``width``: the transform's ``min_size``/``max_size`` become
        what a model built for that size has (so an image of that size is not resized, and
        any other is resized to it as it would be); returns what restores the previous
        sizes. Nothing else in FCOS depends on the size: its layers are convolutions and
        its anchors follow the levels' sizes."""
        transform = self.transform
        before = (transform.min_size, transform.max_size)
        transform.min_size, transform.max_size = (min(height, width),), max(height, width)

        def undo() -> None:
            transform.min_size, transform.max_size = before

        return undo

    def after_core(self, outputs: HeadOutputs, context: DetectionContext) -> Any:
        """torchvision's anchors, then its losses (train mode) or its decoded, NMS-ed boxes
        in the original images' coordinates (eval mode), from the heads' outputs."""
        head_outputs, level_sizes = outputs
        like = head_outputs["cls_logits"]
        # the anchor generator reads only the levels' sizes, dtype and device
        levels = [like.new_empty((0, 0, int(h), int(w))) for h, w in level_sizes]
        anchors = self._anchor_generator()(context.images, levels)
        per_level = [int(h) * int(w) for h, w in level_sizes]
        if self.training:
            if context.targets is None:
                raise DiscoZooError("a detector in train mode needs targets (boxes and labels per image) for its "
                                    "losses; call .eval() to predict")
            return self.compute_loss(context.targets, head_outputs, anchors, per_level)
        split = {key: list(value.split(per_level, dim=1)) for key, value in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        detections = self.postprocess_detections(split, split_anchors, context.images.image_sizes)
        return self.transform.postprocess(detections, context.images.image_sizes, context.original_sizes)

    def _anchor_generator(self) -> nn.Module:
        """The anchor generator, its cell anchors made anew when the model was built on the
        meta device (a node model): they are plain attributes, in no state dict or shard."""
        generator = self.anchor_generator
        if any(a.is_meta for a in generator.cell_anchors):
            generator.cell_anchors = [generator.generate_anchors(size, ratio)
                                      for size, ratio in zip(generator.sizes, generator.aspect_ratios)]
        return generator
