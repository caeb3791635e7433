"""Traffic of *dense* within-layer parallelism: the baseline every DISCO figure is compared with.

Each conv/linear input tensor is split into contiguous channel groups, one per node
(channels are dim 1 of a conv input and the last dim of a linear input). Node k computes
its own output channels and must receive, from every other node j, each of j's input
channels that any of k's output channels reads: all of them for a dense layer, only
those of the same group for grouped or depthwise convs. The image entering the first
conv is split the same way, so its transfer is counted like any other input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.layer_graph import Layer, LayerGraph

__all__ = ["channel_split", "channel_ranges", "DenseTPTraffic", "dense_tp_traffic", "layer_dense_tp_bytes"]


def channel_split(channels: int, nodes: int, ratios: Sequence[float] | None = None) -> list[int]:
    """Channels per node for a split by ``ratios`` (equal when None), largest remainder rounding."""
    if nodes < 1:
        raise DiscoZooError(f"nodes must be >= 1, got {nodes}")
    if ratios is None:
        ratios = [1.0] * nodes
    if len(ratios) != nodes or any(r <= 0 for r in ratios):
        raise DiscoZooError(f"ratios must be {nodes} positive numbers, got {list(ratios)}")
    total = float(sum(ratios))
    exact = [channels * r / total for r in ratios]
    sizes = [math.floor(x) for x in exact]
    order = sorted(range(nodes), key=lambda i: (sizes[i] - exact[i], i))
    for i in order[: channels - sum(sizes)]:
        sizes[i] += 1
    return sizes


def channel_ranges(channels: int, nodes: int, ratios: Sequence[float] | None = None) -> list[range]:
    """Contiguous channel ranges per node (see :func:`channel_split`)."""
    ranges, start = [], 0
    for size in channel_split(channels, nodes, ratios):
        ranges.append(range(start, start + size))
        start += size
    return ranges


@dataclass(frozen=True)
class DenseTPTraffic:
    """Bytes per inference moved by dense within-layer parallelism."""

    nodes: int
    dtype_bytes: int
    per_layer: dict[str, int]
    per_pair: dict[tuple[int, int], int]  # (sender, receiver) -> bytes

    @property
    def total(self) -> int:
        return sum(self.per_layer.values())


def _channels_and_spatial(layer: Layer) -> tuple[int, int]:
    shape = layer.input_shapes[0]
    if layer.op == "conv":
        channels = shape[1]
    else:
        channels = shape[-1]
    return channels, math.prod(shape) // channels


def _needed_inputs(layer: Layer, out_range: range, in_channels: int) -> set[int]:
    """Input channels that the output channels ``out_range`` read."""
    groups = layer.attrs.get("groups", 1)
    if groups == 1:
        return set(range(in_channels))
    out_per_group = layer.attrs["out_channels"] // groups
    in_per_group = in_channels // groups
    needed: set[int] = set()
    for g in {o // out_per_group for o in out_range}:
        needed.update(range(g * in_per_group, (g + 1) * in_per_group))
    return needed


def layer_dense_tp_bytes(
    layer: Layer, nodes: int, dtype_bytes: int, ratios: Sequence[float] | None = None
) -> dict[tuple[int, int], int]:
    """Bytes node j sends node k for one conv/linear, keyed (j, k); empty for other layers."""
    if layer.op not in ("conv", "linear") or not layer.input_shapes:
        return {}
    in_channels, spatial = _channels_and_spatial(layer)
    out_channels = layer.output_shape[1] if layer.op == "conv" else layer.output_shape[-1]
    in_ranges = channel_ranges(in_channels, nodes, ratios)
    out_ranges = channel_ranges(out_channels, nodes, ratios)
    pairs: dict[tuple[int, int], int] = {}
    for k, out_range in enumerate(out_ranges):
        if not len(out_range):
            continue
        needed = _needed_inputs(layer, out_range, in_channels)
        for j, in_range in enumerate(in_ranges):
            if j != k:
                count = len(needed.intersection(in_range))
                if count:
                    pairs[(j, k)] = count * spatial * dtype_bytes
    return pairs


def dense_tp_traffic(
    graph: LayerGraph, nodes: int, dtype_bytes: int | None = None, ratios: Sequence[float] | None = None
) -> DenseTPTraffic:
    """Per-layer and per-pair bytes of dense within-layer parallelism over ``nodes`` nodes."""
    dtype_bytes = graph.dtype_bytes if dtype_bytes is None else dtype_bytes
    per_layer: dict[str, int] = {}
    per_pair: dict[tuple[int, int], int] = {}
    for layer in graph.of_op("conv", "linear"):
        pairs = layer_dense_tp_bytes(layer, nodes, dtype_bytes, ratios)
        per_layer[layer.name] = sum(pairs.values())
        for pair, count in pairs.items():
            per_pair[pair] = per_pair.get(pair, 0) + count
    return DenseTPTraffic(nodes=nodes, dtype_bytes=dtype_bytes, per_layer=per_layer, per_pair=per_pair)
