"""Baseline placements, scored by the same model of time as EdgeFlow (planner/simulate.py).

All baselines keep the input on device 0 and return the output there, like EdgeFlow.
Layers that cannot be split (flatten, linear head, global pool) go to the fastest
device in the split baselines. Baselines ignore memory limits: they are yardsticks.
"""
from __future__ import annotations

import numpy as np

from disco_zoo.graph import LayerGraph
from disco_zoo.planner.lp import ranges_from_counts, round_counts
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.units import Placement, compute_seconds, extent, splittable


def _whole(n: int, dev: int, h: int) -> list[tuple[int, int]]:
    return ranges_from_counts([h if k == dev else 0 for k in range(n)])


def _pinned(layer_op: str) -> bool:
    return layer_op in ("input", "output")


def single_device(graph: LayerGraph, profile: Profile, device: int | None = None) -> Placement:
    """Everything on one device (the fastest for convolutions by default)."""
    dev = profile.fastest() if device is None else device
    n = len(profile)
    return {l.name: _whole(n, 0 if _pinned(l.op) else dev, extent(l)) for l in graph}


def row_split(graph: LayerGraph, profile: Profile, weights: list[float]) -> Placement:
    """Every splittable layer split by rows in proportion to ``weights``."""
    n, fast = len(profile), profile.fastest()
    out: Placement = {}
    counts: dict[int, list[int]] = {}  # per height: the rounding is the same for every layer of it
    for layer in graph:
        h = extent(layer)
        if _pinned(layer.op):
            out[layer.name] = _whole(n, 0, h)
        elif splittable(layer):
            if h not in counts:
                counts[h] = round_counts(np.array(weights, dtype=float), h)
            out[layer.name] = ranges_from_counts(counts[h])
        else:
            out[layer.name] = _whole(n, fast, h)
    return out


def equal_split(graph: LayerGraph, profile: Profile) -> Placement:
    return row_split(graph, profile, [1.0] * len(profile))


def proportional_split(graph: LayerGraph, profile: Profile) -> Placement:
    return row_split(graph, profile, [d.rate("conv") for d in profile.devices])


def layerwise_split(graph: LayerGraph, profile: Profile) -> Placement:
    """Whole layers to devices: best segmentation of the topological order (Neurosurgeon-style DP).

    The DP cost of a cut is the bytes of every tensor that crosses it sent over the
    link between the two segments' devices; the result is then scored by the replay.
    """
    layers = list(graph)
    n, L = len(profile), len(layers)
    index = {l.name: k for k, l in enumerate(layers)}
    cut = np.zeros(L + 1)  # bytes produced before k and used at or after k
    for k, layer in enumerate(layers):
        last = max((index[s] for s in layer.successors), default=k)
        cut[k + 1:last + 1] += layer.output_bytes
    comp = np.array([[compute_seconds(l, extent(l), profile.devices[d].rate(l.op)) for l in layers]
                     for d in range(n)])
    prefix = np.concatenate([np.zeros((n, 1)), np.cumsum(comp, axis=1)], axis=1)
    trans = np.zeros((L + 1, n, n))
    for a in range(n):
        for b in range(n):
            if a != b:
                link = profile.link(a, b)
                trans[:, a, b] = np.where(cut > 0, link.transfer_time(cut) + link.latency_s, 0)
    best = np.full((L + 1, n), np.inf)
    back = np.zeros((L + 1, n, 2), dtype=int)
    best[1, 0] = 0.0  # the input layer, on device 0
    for k2 in range(2, L + 1):
        ends = n if k2 < L else 1  # the output ends on device 0
        # cand[k, d, d2]: segment [k+1, k2) on d2 after a plan of [0, k+1) ending on d; all d2 at once
        rest = (prefix[:ends, k2][:, None] - prefix[:ends, 1:k2]).T  # [k, d2]: the segment's compute on d2
        cand = best[1:k2, :, None] + trans[1:k2, :, :ends] + rest[:, None, :]
        flat = cand.reshape(-1, ends)
        first = np.argmin(flat, axis=0)  # the first minimum in (k, d) order, as argmin over each d2's slice
        k, d = np.unravel_index(first, cand.shape[:2])
        best[k2, :ends] = flat[first, np.arange(ends)]
        back[k2, :ends, 0], back[k2, :ends, 1] = k + 1, d
    owner = [0] * L
    k2, d2 = L, 0
    while k2 > 1:
        k, d = back[k2, d2]
        for t in range(k, k2):
            owner[t] = d2
        k2, d2 = k, d
    return {l.name: _whole(n, owner[k], extent(l)) for k, l in enumerate(layers)}


BASELINES = {
    "single-fastest": single_device,
    "equal-split": equal_split,
    "proportional-split": proportional_split,
    "layer-wise": layerwise_split,
}
