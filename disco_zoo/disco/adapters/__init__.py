"""Family adapters: turn a dense model into its DISCO form (same weights, masked layers).

``to_disco(model, nodes, ratios)`` picks the adapter for the model's core
(:func:`~disco_zoo.graph.stages.core_of`: the model itself, or the traced middle of a
model with pre/post-processing stages, e.g. a detector) family (ViT and Swin
are attention-aware; every other model goes through the generic graph adapter,
:mod:`disco_zoo.disco.adapters.graph`), builds the
:class:`~disco_zoo.disco.partition.Partition` and swaps every conv/linear it names for a
masked twin that shares the weights (timm's model code is not forked). The model is
changed in place and returned, with the partition at ``model.disco_partition``.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import nn

from disco_zoo.disco.masked import to_masked
from disco_zoo.disco.partition import Partition
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.stages import core_of

__all__ = ["to_disco", "apply_partition", "get_partition", "find_partition", "build_partition", "families"]


def _families() -> list[tuple[str, Callable[[nn.Module], bool], Callable[..., Partition]]]:
    from disco_zoo.disco.adapters import graph, resnet, swin, vit

    return [
        ("vit", vit.is_vit, vit.vit_partition),  # attention-aware: whole heads per node
        ("swin", swin.is_swin, swin.swin_partition),
        ("resnet", resnet.is_resnet, resnet.resnet_partition),  # the graph adapter, family label "resnet"
        ("sequential", resnet.is_sequential, resnet.sequential_partition),
        ("graph", lambda model: True, graph.graph_partition),  # any other traceable conv DAG
    ]


def families() -> list[str]:
    """The adapter families, in the order they are tried (the one list of them)."""
    return [name for name, _, _ in _families()]


def build_partition(model: nn.Module, nodes: int, ratios: Sequence[float] | None = None) -> Partition:
    """The partition (masks open) of a dense model over ``nodes`` nodes split by ``ratios``."""
    if nodes < 2:
        raise DiscoZooError(f"DISCO needs at least 2 nodes, got {nodes}")
    if ratios is not None and (len(ratios) != nodes or any(r <= 0 for r in ratios)):
        raise DiscoZooError(f"ratios must be {nodes} positive numbers, got {list(ratios)}")
    ratios = [float(r) for r in ratios] if ratios is not None else [1.0] * nodes
    core = core_of(model)  # a detector's backbone+FPN+heads; its pre/post-processing stays on the root
    for _, matches, make in _families():
        if matches(core):
            part = make(core, nodes, ratios)
            part.check()
            return part
    raise AssertionError("the graph adapter matches every model")  # pragma: no cover


def apply_partition(model: nn.Module, partition: Partition) -> nn.Module:
    """Mask every layer the partition names (in place) and attach the partition."""
    modules = dict(model.named_modules())
    for name, split in partition.layers.items():
        if name not in modules:
            raise DiscoZooError(f"partition names layer {name!r}, which the model does not have")
        try:
            to_masked(modules[name], split)
        except ValueError as err:
            raise DiscoZooError(str(err)) from None
    model.disco_partition = partition
    return model


def find_partition(model: nn.Module) -> Partition | None:
    """The partition of a DISCO model, or None for a dense one."""
    return getattr(model, "disco_partition", None)


def get_partition(model: nn.Module) -> Partition:
    """The partition of a DISCO model; a dense model is a clear error."""
    part = find_partition(model)
    if part is None:
        raise DiscoZooError(f"{type(model).__name__} is not a DISCO model; convert it with to_disco(model, nodes)")
    return part


def to_disco(model: nn.Module, nodes: int, ratios: Sequence[float] | None = None) -> nn.Module:
    """Convert a dense model to DISCO over ``nodes`` nodes (in place; masks open = same outputs)."""
    return apply_partition(model, build_partition(model, nodes, ratios))
