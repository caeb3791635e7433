"""Compute a unit: a layer's output rows from the input rows its requirements name.

Row-wise layers (bn, activations, add, mul, concat) run their own fx node on row
slices unchanged. Convs and max/avg pools get the rows above/below the input that
the layer's padding would invent padded explicitly (zeros, or -inf for max pooling)
and then run with no vertical padding, so a slice gives exactly the full layer's rows.
Whole layers run their fx node on full inputs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.units import Range, _window, input_rows, splittable


def _node(graph: LayerGraph, name: str) -> torch.fx.Node:
    for node in graph.graph_module.graph.nodes:
        if node.name == name:
            return node
    raise KeyError(name)


def call_node(gm: torch.fx.GraphModule, node: torch.fx.Node, values: dict[str, Any]) -> Any:
    """Run one fx node with its tensor arguments taken from ``values`` (by node name)."""
    def fetch(n: torch.fx.Node) -> Any:
        if n.op == "get_attr":
            obj: Any = gm
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        return values[n.name]

    args = torch.fx.node.map_arg(node.args, fetch)
    kwargs = torch.fx.node.map_arg(node.kwargs, fetch)
    if node.op == "call_module":
        return gm.get_submodule(str(node.target))(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], str(node.target))(*args[1:], **kwargs)
    raise ValueError(f"cannot run fx node {node.name} ({node.op})")


def _pad_rows(x: torch.Tensor, top: int, bottom: int, value: float) -> torch.Tensor:
    return F.pad(x, (0, 0, top, bottom), value=value) if top or bottom else x


def compute_unit(graph: LayerGraph, layer: Layer, rows: Range, inputs: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    """Output ``rows`` of ``layer``; ``inputs[k]`` = (rows held of predecessor k, first row index).

    Each held tensor must cover ``input_rows(layer, k, rows)``; extra rows are cut off.
    """
    node = _node(graph, layer.name)
    pieces = []
    for k, (tensor, first) in enumerate(inputs):
        lo, hi = input_rows(layer, k, rows)
        pieces.append(tensor[:, :, lo - first:hi - first].clone() if tensor.dim() == 4 else tensor.clone())
    if not splittable(layer) or layer.op not in ("conv", "pool"):
        values = dict(zip(layer.predecessors, pieces))
        return call_node(graph.graph_module, node, values)
    module = graph.module_of(layer)
    kernel, stride, pad, dil = _window(layer)
    a, b = rows
    h_in = int(layer.input_shapes[0][2])
    top = max(0, pad - a * stride)
    bottom = max(0, (b - 1) * stride - pad + dil * (kernel - 1) + 1 - h_in)
    x = pieces[0]
    if isinstance(module, nn.Conv2d):
        pw = module.padding[1]
        x = _pad_rows(x, top, bottom, 0.0)
        return F.conv2d(x, module.weight, module.bias, module.stride, (0, pw), module.dilation, module.groups)
    pw = module.padding[1] if isinstance(module.padding, (tuple, list)) else module.padding
    if isinstance(module, nn.MaxPool2d):
        x = _pad_rows(x, top, bottom, float("-inf"))
        return F.max_pool2d(x, module.kernel_size, module.stride, (0, pw), module.dilation, module.ceil_mode)
    if isinstance(module, nn.AvgPool2d):
        if not module.count_include_pad and (top or bottom):
            raise ValueError(f"{layer.name}: row-split AvgPool2d(count_include_pad=False) with padding")
        x = _pad_rows(x, top, bottom, 0.0)
        return F.avg_pool2d(x, module.kernel_size, module.stride, (0, pw), module.ceil_mode,
                            module.count_include_pad, module.divisor_override)
    raise ValueError(f"no row-sliced kernel for {type(module).__name__}")  # splittable() excludes these
