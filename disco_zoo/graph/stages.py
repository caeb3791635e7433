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

A model whose pre-processing resizes its images to the size it was built for (FCOS's
transform resizes every image to ``min_size``/``max_size``) also says how to run it at
another size, by a fourth method:

* ``preprocess_at_size(height, width) -> undo``: configure the pre-processing for inputs of
  that size (afterwards an input of that size runs at that size, as in a model built for
  it), returning a function that restores the previous configuration.

A model without them is its own core, with identity stages. Everything that traces a
model, measures it at an input shape, or runs it split (the graph adapter, the layer
graph, the accounting, the runtime) goes through these helpers, so an input of shape S
means the same thing to all of them: the model runs *at* S (:func:`set_input_shape`: a
model built for another size is configured for S first, so accounting, timing or running
a detector at its deployment size measures that size, not the size it was trained at),
and its core runs on :func:`core_input_shape` (S after the pre-processing), which is what
both the runtime and the accounting see.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import nn

__all__ = ["has_stages", "core_of", "before_core", "after_core", "core_input_shape", "set_input_shape",
           "at_input_shape"]


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


def set_input_shape(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Callable[[], None]:
    """Configure ``model`` to run at ``input_shape``'s (height, width) (its
    ``preprocess_at_size``; nothing for a model without one, whose every layer follows the
    input's size anyway); returns the function that undoes it. The runtime's node models
    keep it (a run is at one size); measurements undo it (:func:`at_input_shape`)."""
    method = getattr(model, "preprocess_at_size", None)
    if not has_stages(model) or not callable(method):  # only a staged model's pre-processing (timm's
        return lambda: None  # set_input_size, say, resizes a ViT's position embeddings: never call a look-alike)
    return method(int(input_shape[-2]), int(input_shape[-1]))


@contextmanager
def at_input_shape(model: nn.Module, input_shape: tuple[int, ...] | list[int]) -> Iterator[nn.Module]:
    """``model`` configured to run at ``input_shape`` for the block, as it was after."""
    undo = set_input_shape(model, input_shape)
    try:
        yield model
    finally:
        undo()


def core_input_shape(model: nn.Module, input_shape: tuple[int, ...] | list[int], at_size: bool = True) -> tuple[int, ...]:
    """The shape the core runs on for the model run at ``input_shape`` (padding in the
    pre-processing may change it), from the pre-processing of a zero image. The
    pre-processing holds no weights (it runs on a node model built on the meta device).
    ``at_size=False``: for an image of ``input_shape`` given to the model as it is
    configured (a detector built for 128 pixels resizes a 256-pixel image to 128)."""
    if not has_stages(model):
        return tuple(input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (at_input_shape(model, input_shape) if at_size else nullcontext()):
            x, _ = model.before_core(torch.zeros(tuple(input_shape)))
    finally:
        model.train(was_training)
    return tuple(x.shape)
