"""The EdgeFlow cost model, and an event-driven simulation of a whole plan with it.

One function, :func:`layer_timing`, says when each device finishes its share of a
layer; the LP planner scores candidates with it and the simulator replays plans with
it, so a plan's predicted latency is the same number in both places.

Model: device i starts its unit of layer l when it is free (it runs one unit at a
time, in topological order) and every input row has arrived. Rows it already holds
arrive when its own unit of the predecessor finished; rows held by device j arrive at
T_{m,j} + bytes*8/B_{j,i} + latency_{j,i} (links do not contend). It then computes for
rows * FLOPs-per-row / rate_i seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.units import Placement, Range, extent, input_rows, overlap, row_bytes


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


def compute_seconds(layer: Layer, rows: int, rate: float) -> float:
    return rows * (layer.flops / extent(layer)) / rate if rows > 0 else 0.0


def layer_timing(graph: LayerGraph, layer: Layer, ranges: list[Range], placement: Placement,
                 state: State, profile: Profile) -> LayerTiming:
    """Start/finish of each device's unit of ``layer`` under ``ranges``."""
    n = len(profile)
    start, finish, bytes_in = [0.0] * n, [float("-inf")] * n, [0.0] * n
    for i, rows in enumerate(ranges):
        if rows[0] >= rows[1]:
            continue
        ready = state.free[i]
        for k, pred in enumerate(layer.predecessors):
            need = input_rows(layer, k, rows)
            rb = row_bytes(graph[pred])
            for j, have in enumerate(placement[pred]):
                ov = overlap(need, have)
                if not ov:
                    continue
                t = state.finish[pred][j]
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


@dataclass
class Event:
    layer: str
    device: int
    rows: Range
    start: float
    finish: float


@dataclass
class Simulation:
    latency_s: float
    bytes_total: int
    timeline: list[Event]
    busy_s: list[float]


def simulate(graph: LayerGraph, placement: Placement, profile: Profile) -> Simulation:
    """Predicted latency, bytes on the wire and per-device timeline of a placement."""
    state = State(free=[0.0] * len(profile))
    events: list[Event] = []
    total = 0.0
    busy = [0.0] * len(profile)
    for layer in graph:
        timing = layer_timing(graph, layer, placement[layer.name], placement, state, profile)
        commit(state, layer, timing)
        total += sum(timing.bytes_in)
        for i, rows in enumerate(placement[layer.name]):
            if rows[0] < rows[1]:
                events.append(Event(layer.name, i, rows, timing.start[i], timing.finish[i]))
                busy[i] += timing.finish[i] - timing.start[i]
    out = [layer for layer in graph if layer.op == "output"]
    latency = max(state.finish[out[-1].name]) if out else max(max(f) for f in state.finish.values())
    return Simulation(latency, int(round(total)), events, busy)
