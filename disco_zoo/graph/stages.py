"""A model's stages: untraceable pre-processing, the traced core, untraceable post-processing.

Why: a detector is not one conv DAG. torchvision's FCOS normalises and resizes its
images (a ``GeneralizedRCNNTransform``), runs the backbone, FPN and heads (a conv DAG
torch.fx traces), then makes anchors, decodes boxes and runs NMS (data-dependent code
no tracer follows). Only the middle is split across nodes; the two ends run on the root
(the node that holds the image and gets the output). A model says so by three methods
(duck-typed, so no model family is named here or anywhere that calls these helpers):

* ``traced_core() -> nn.Module``: the part that is traced, split and measured: one
  image tensor in, tensors out. Its submodules must be the model's own, under the same
  names (a view holding the model's children), so a partition built on it names the
  model's layers;
* ``before_core(images, targets=None) -> (tensor, context)``: what runs before the core;
* ``after_core(outputs, context)``: what runs after it on the core's (gathered) outputs,
  giving what the model's ``forward`` returns.

A model without them is its own core, with identity stages. Everything that traces a
model, measures it at an input shape, or runs it split (the graph adapter, the layer
graph, the accounting, the runtime) goes through these helpers, so an input of shape S
means the same thing to all of them: the core runs on :func:`core_input_shape` (S after
the pre-processing), which is what both the runtime and the accounting see.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["has_stages", "core_of", "before_core", "after_core", "core_input_shape"]


def has_stages(model: nn.Module) -> bool:
    """Whether ``model`` splits its forward into pre-processing, core and post-processing."""
    return all(callable(getattr(model, name, None)) for name in ("traced_core", "before_core", "after_core"))


def core_of(model: nn.Module) -> nn.Module:
    """The module that is traced and split: the model's core, else the model itself."""
    return model.traced_core() if has_stages(model) else model


def before_core(model: nn.Module, images: Any, targets: Any = None) -> tuple[Any, Any]:
    """(the core's input, the context ``after_core`` needs) for ``images``."""
    return model.before_core(images, targets) if has_stages(model) else (images, None)


def after_core(model: nn.Module, outputs: Any, context: Any) -> Any:
    """The model's output from its core's outputs (identity for a model without stages)."""
    return model.after_core(outputs, context) if has_stages(model) else outputs


def core_input_shape(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """The shape the core runs on for an input of ``input_shape`` (a resize or padding in
    the pre-processing changes it), from the pre-processing of a zero image. The
    pre-processing holds no weights (it runs on a node model built on the meta device)."""
    if not has_stages(model):
        return tuple(input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x, _ = model.before_core(torch.zeros(tuple(input_shape)))
    finally:
        model.train(was_training)
    return tuple(x.shape)
