"""Fold a batch norm that follows a sum of convolutions into those convolutions.

Why: a DISCO layer computes ``bn(conv(own) + conv(received))``. The own conv runs before
the exchange and the received one after it, so no ONNX optimiser can fold the norm (it
folds ``bn(conv(x))`` only), and every such layer pays for a standalone batch norm: a
full pass over its output map. Since ``bn(a + b) = s * a + (s * b + t)`` with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``, scaling both convs' weights
by ``s`` and giving one of them the bias ``t`` computes the same (to float rounding) with
the norm gone, and leaves ``conv + add (+ relu)``, which onnxruntime fuses.
"""
from __future__ import annotations

import torch
from torch import fx

__all__ = ["fold_sum_batch_norms"]

_BN = torch.ops.aten.batch_norm.default
_ADD = torch.ops.aten.add.Tensor
_CONV = torch.ops.aten.conv2d.default


def _attr(gm: fx.GraphModule, node: object) -> torch.Tensor | None:
    """The constant tensor a get_attr node reads (None for anything else)."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = gm
    for part in node.target.split("."):
        value = getattr(value, part)
    return value if isinstance(value, torch.Tensor) else None


def _foldable_convs(gm: fx.GraphModule, bn: fx.Node) -> list[fx.Node] | None:
    """The two convs of ``bn(conv + conv)`` when the norm may be folded into them: an
    inference norm with constant statistics, a plain add, and convs with constant
    weights that nothing but the add reads."""
    if bn.target is not _BN or bn.args[5] or any(_attr(gm, a) is None for a in bn.args[1:5]):
        return None
    add = bn.args[0]
    if not isinstance(add, fx.Node) or add.target is not _ADD or len(add.users) != 1 or add.kwargs or len(add.args) != 2:
        return None
    convs = list(add.args)
    for conv in convs:
        if not isinstance(conv, fx.Node) or conv.target is not _CONV or len(conv.users) != 1:
            return None
        bias = conv.args[2] if len(conv.args) > 2 else None
        if _attr(gm, conv.args[1]) is None or (bias is not None and _attr(gm, bias) is None):
            return None
    return convs


def _set_weights(gm: fx.GraphModule, conv: fx.Node, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Point ``conv`` at new constant weight and bias attributes (the old ones may be shared)."""
    graph = gm.graph
    args = list(conv.args) + [None] * (3 - len(conv.args))
    with graph.inserting_before(conv):
        for slot, value in ((1, weight), (2, bias)):
            if value is None:
                args[slot] = None
                continue
            name = f"_folded_{conv.name}_{'weight' if slot == 1 else 'bias'}"
            gm.register_buffer(name, value)
            args[slot] = graph.get_attr(name)
            args[slot].meta["val"] = value
    conv.args = tuple(args)


def _fold(gm: fx.GraphModule, bn: fx.Node, convs: list[fx.Node]) -> None:
    gamma, beta, mean, var = (_attr(gm, a) for a in bn.args[1:5])
    scale = gamma / torch.sqrt(var + float(bn.args[7]))
    shift = beta - mean * scale
    for i, conv in enumerate(convs):
        weight = _attr(gm, conv.args[1])
        old_bias = _attr(gm, conv.args[2]) if len(conv.args) > 2 else None
        bias = None if old_bias is None else old_bias * scale
        if i == 0:
            bias = shift if bias is None else bias + shift
        _set_weights(gm, conv, weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), bias)
    bn.replace_all_uses_with(bn.args[0])
    gm.graph.erase_node(bn)


def fold_sum_batch_norms(gm: fx.GraphModule) -> int:
    """Fold every ``bn(conv + conv)`` of ``gm`` (in place); how many were folded."""
    folded = 0
    for node in list(gm.graph.nodes):
        convs = _foldable_convs(gm, node) if node.op == "call_function" else None
        if convs is not None:
            _fold(gm, node, convs)
            folded += 1
    if folded:
        gm.recompile()
    return folded
