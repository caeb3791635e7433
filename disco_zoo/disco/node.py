"""What one node computes for one conv/linear, from its shard alone.

The runtime calls these with the channels a node holds and the channels it received;
they put them in the column order of the node's shard weight (increasing channel
index, see :mod:`disco_zoo.disco.shards`) and apply it. Single-process tests use them
to prove the shard format and the partition agree with the masked model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from disco_zoo.disco.partition import LayerSplit

__all__ = ["node_input", "node_forward"]


def node_input(
    layer: LayerSplit, k: int, own: torch.Tensor, received: dict[int, torch.Tensor], dim: int
) -> torch.Tensor:
    """Node k's layer input in shard column order.

    ``own`` has node k's channels ``in_groups[k]`` along ``dim`` (in that order);
    ``received[j]`` has the channels ``selected[k][j]`` node j sent (in that order).
    Channels node k dropped from its own block (compute pruning) are left out.
    """
    index = {c: (None, i) for i, c in enumerate(layer.in_groups[k])}
    for j, chans in enumerate(layer.selected[k]):
        if j != k:
            index.update({c: (j, i) for i, c in enumerate(chans)})
    pieces = []
    for c in layer.columns(k):
        src, i = index[c]
        tensor = own if src is None else received[src]
        pieces.append(tensor.narrow(dim, i, 1))
    if not pieces:  # a node that reads nothing (e.g. no image channel, masks closed)
        shape = list(own.shape)
        shape[dim] = 0
        return own.new_zeros(shape)
    return torch.cat(pieces, dim)


def node_forward(
    module: nn.Module, layer: LayerSplit, k: int, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Node k's output rows (split) or partial product (reduce; bias only on root).

    ``module`` supplies the layer's hyper-parameters (stride, padding, ...); ``weight``
    and ``bias`` are node k's shard tensors; ``x`` comes from :func:`node_input`.
    """
    if isinstance(module, nn.Conv2d):
        if weight.shape[1] == 0:  # no input columns: the output is the bias alone
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], 1)
            weight = torch.cat([weight, weight.new_zeros(weight.shape[0], 1, *weight.shape[2:])], 1)
        return F.conv2d(x, weight, bias, module.stride, module.padding, module.dilation)
    return F.linear(x, weight, bias)
