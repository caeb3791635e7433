"""The LP's linearised per-layer cost: when each device finishes its share of one layer.

Why a separate, simpler model: the planner places layers one at a time and scores many
candidate splits of each, so it needs a cost it can evaluate (and linearise, for the LP)
per layer. It approximates the model of time (:mod:`disco_zoo.timing`) by letting links
not contend: rows held by device j arrive at T_{m,j} + bytes*8/B_{j,i} + latency_{j,i},
whatever else that link carries. A plan's *reported* latency never comes from here but
from the replay of its units (:mod:`disco_zoo.planner.simulate`), which queues messages
on each ordered pair; this per-layer cost is a lower bound of it.

Model: device i starts its unit of layer l when it is free (it runs one unit at a
time, in topological order) and every input row has arrived. Rows it already holds
arrive when its own unit of the predecessor finished. It then computes for
rows * FLOPs-per-row / rate_i seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.units import Placement, Range, _row_maps, compute_seconds, input_rows, row_bytes

__all__ = ["State", "LayerTiming", "layer_timing", "commit"]


@dataclass
class State:
    """What is known after placing a prefix of the layers."""

    finish: dict[str, list[float]] = field(default_factory=dict)  # layer -> per-device finish
    free: list[float] = field(default_factory=list)  # device -> when it is idle again


@dataclass
class LayerTiming:
    start: list[float]
    finish: list[float]  # -inf for devices without rows
    bytes_in: list[float]

    @property
    def done(self) -> float:
        return max(self.finish)


def layer_timing(graph: LayerGraph, layer: Layer, ranges: list[Range], placement: Placement,
                 state: State, profile: Profile) -> LayerTiming:
    """Start/finish of each device's unit of ``layer`` under ``ranges``."""
    n = len(profile)
    start, finish, bytes_in = [0.0] * n, [float("-inf")] * n, [0.0] * n
    maps = _row_maps(layer)
    inputs = [(k, maps[k], row_bytes(graph[pred]), placement[pred], state.finish.get(pred))
              for k, pred in enumerate(layer.predecessors)]
    for i, rows in enumerate(ranges):
        if rows[0] >= rows[1]:
            continue
        ready = state.free[i]
        last = None  # inputs read alike (a concat's) need the same rows: :func:`input_rows` once for them
        for k, row_map, rb, haves, done in inputs:
            if row_map != last:
                lo, hi = input_rows(layer, k, rows)
                last = row_map
            for j, (a, b) in enumerate(haves):
                ov = (hi if hi < b else b) - (lo if lo > a else a)  # :func:`overlap`, inlined: the hot loop
                if ov <= 0:
                    continue
                t = done[j]
                if j != i:
                    t += profile.link(j, i).seconds(ov * rb)
                    bytes_in[i] += ov * rb
                ready = max(ready, t)
        start[i] = ready
        finish[i] = ready + compute_seconds(layer, rows[1] - rows[0], profile.devices[i].rate(layer.op))
    return LayerTiming(start, finish, bytes_in)


def commit(state: State, layer: Layer, timing: LayerTiming) -> None:
    state.finish[layer.name] = timing.finish
    state.free = [max(f, t) for f, t in zip(state.free, timing.finish)]
