"""DISCO runs as per-device programs derived from the partition, for the model of time.

Why derived, not measured: a measured program (:mod:`disco_zoo.runtime.profiling`) is this
machine's compute; a device profile says how fast *another* device computes. So the
planner feeds the one replay (:mod:`disco_zoo.timing.replay`) the partition's own FLOPs per
node over each device's rate, in the order the DISCO executor
(:mod:`disco_zoo.runtime.disco_executor`) runs a layer:

* the image scatter: rank 0 sends node k its channels I_k of the first layer's input;
* a split conv/linear: post the sends of this node's channels to every peer that selected
  some, compute the diagonal block, then per peer wait for its channels and compute that
  block, then wait for the sends;
* a reduce layer (a head): compute the partial product; a non-root node sends it to the
  root, the root waits for every partial;
* a split LayerNorm: exchange the per-token statistics with every other holder;
* a grouped (depthwise) conv: each node computes its whole groups, nothing moves;
* after the forward, each split model output is gathered on its root.

A layer called more than once (a head shared across pyramid levels) does the above at
each call, under the call's tag (``name``, ``name@1``, ...).

Bytes per message are the accounting's (:func:`disco_zoo.disco.accounting.layer_pair_bytes`
and its siblings), so the bytes replayed are the bytes the runtime counts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from disco_zoo.disco.accounting import (
    call_shares, gather_pair_bytes, input_pair_bytes, layer_pair_bytes, norm_pair_bytes,
)
from disco_zoo.disco.partition import LayerSplit, Partition, layer_of, output_tag
from disco_zoo.timing.replay import ComputeProfile, Event, RankProgram

__all__ = ["NodeWork", "node_work", "disco_programs", "INPUT_TAG"]

INPUT_TAG = "input"  # the executor's tag for the image scatter


@dataclass(frozen=True)
class NodeWork:
    """What one layer asks of one node: FLOPs of its own block and of each peer's block."""

    own_flops: float
    peer_flops: dict[int, float]  # peer j -> FLOPs of W[O_k, S_kj] X[S_kj]


def node_work(layer: LayerSplit, flops_per_entry: float, k: int) -> NodeWork:
    """The FLOPs node ``k`` spends on ``layer`` (a weight entry (o, c) costs ``flops_per_entry``)."""
    if layer.mode == "reduce":
        return NodeWork(flops_per_entry * layer.out_channels * len(layer.in_groups[k]), {})
    rows = len(layer.out_groups[k])
    dropped = set(layer.dropped[k]) if layer.dropped else set()
    own = sum(1 for c in layer.in_groups[k] if c not in dropped)
    peers = {j: flops_per_entry * rows * len(layer.selected[k][j])
             for j in range(layer.nodes) if j != k and layer.selected[k][j]}
    return NodeWork(flops_per_entry * rows * own, peers)


class _Builder:
    """One node's program, accumulating compute until the next communication event."""

    def __init__(self, rank: int, rate: float) -> None:
        self.program, self.rate, self.pending = RankProgram(rank), rate, 0.0

    def compute(self, flops: float) -> None:
        self.pending += flops / self.rate

    def event(self, kind: str, peer: int, tag: str, nbytes: int = 0) -> None:
        self.program.events.append(Event(kind, peer, tag, self.pending, nbytes))
        self.pending = 0.0

    def done(self) -> RankProgram:
        self.program.tail_s, self.pending = self.pending, 0.0
        return self.program


def disco_programs(
    part: Partition,
    shapes: dict[str, Any],
    flops_per_entry: dict[str, float],
    rates: Sequence[float],
    input_shape: tuple[int, ...],
    dtype_bytes: int = 4,
    grouped_flops: dict[str, float] | None = None,
) -> ComputeProfile:
    """Every node's program at compute ``rates[k]`` FLOP/s (node k's device).

    ``shapes`` maps each call of a layer and norm to its (input, output) shape, in execution
    order (:func:`disco_zoo.disco.accounting.layer_shapes`; a shared layer's later calls are
    ``name@i``, which is also their tag); the FLOPs of a weight entry over all of a layer's
    calls come from the accounting (``DiscoAccounting.flops_per_entry``), each call taking
    its share (:func:`~disco_zoo.disco.accounting.call_shares`); ``grouped_flops`` are the
    dense FLOPs of each grouped conv call (keyed as in ``shapes``), which its nodes share by
    output channels.
    """
    gathers = {output_tag(g.key): g for g in part.outputs}
    n = part.nodes
    nodes = [_Builder(k, rates[k]) for k in range(n)]
    for (src, dst), nbytes in input_pair_bytes(part, tuple(input_shape), dtype_bytes).items():
        nodes[src].event("send", dst, INPUT_TAG, nbytes)
        nodes[dst].event("recv", src, INPUT_TAG)
    for (src, dst) in input_pair_bytes(part, tuple(input_shape), dtype_bytes):
        nodes[src].event("send_done", dst, INPUT_TAG)
    shares = call_shares(part, shapes)
    for key, (in_shape, out_shape) in shapes.items():
        name = layer_of(key)  # a shared layer's later calls are keyed name@i, their tag
        if name in part.layers:
            layer = part.layers[name]
            pairs = layer_pair_bytes(layer, in_shape, out_shape, dtype_bytes)
            for k, node in enumerate(nodes):
                work = node_work(layer, flops_per_entry[name] * shares[key], k)
                if layer.mode == "reduce":
                    node.compute(work.own_flops)
                    if k != layer.root and (k, layer.root) in pairs:
                        node.event("send", layer.root, key, pairs[(k, layer.root)])
                        node.event("send_done", layer.root, key)
                    elif k == layer.root:
                        for j in range(n):
                            if (j, k) in pairs:
                                node.event("recv", j, key)
                    continue
                sends = [p for p in range(n) if (k, p) in pairs]
                for p in sends:
                    node.event("send", p, key, pairs[(k, p)])
                node.compute(work.own_flops)
                for j, flops in work.peer_flops.items():
                    node.event("recv", j, key)
                    node.compute(flops)
                for p in sends:
                    node.event("send_done", p, key)
        elif name in part.grouped:
            groups = part.grouped[name].out_groups
            total = sum(len(g) for g in groups)
            for k, node in enumerate(nodes):
                node.compute((grouped_flops or {}).get(key, 0.0) * len(groups[k]) / total)
        elif name in gathers:
            gather = gathers[name]
            pairs = gather_pair_bytes(gather.groups, gather.root, in_shape, dtype_bytes)
            for (src, dst), nbytes in pairs.items():
                nodes[src].event("send", dst, name, nbytes)
                nodes[src].event("send_done", dst, name)
            for (src, dst) in pairs:
                nodes[dst].event("recv", src, name)
        elif name in part.norms:
            pairs = norm_pair_bytes(part.norms[name].groups, in_shape, dtype_bytes)
            for k, node in enumerate(nodes):
                peers = [j for j in range(n) if (j, k) in pairs]
                for j in peers:
                    node.event("send", j, name, pairs[(k, j)])
                for j in peers:
                    node.event("recv", j, name)
                for j in peers:
                    node.event("send_done", j, name)
    return ComputeProfile([node.done() for node in nodes])
