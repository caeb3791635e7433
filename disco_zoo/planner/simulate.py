"""A plan's predicted latency, bytes and per-device timeline, from the model of time.

The plan's units become per-device programs (:mod:`disco_zoo.planner.programs`) and the
shared replay (:mod:`disco_zoo.timing.replay`) plays them over the profile's links: the
same engine that predicts measured DISCO runs, FIFO per ordered pair. This is what a
plan, a baseline and ``run-plan``'s prediction report; the LP chooses splits with its
own linearised per-layer cost (:mod:`disco_zoo.planner.layer_cost`), a lower bound of it.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.programs import plan_programs
from disco_zoo.planner.units import Placement, Range, Unit, build_units, compute_seconds, input_rows, row_bytes
from disco_zoo.timing.links import Link
from disco_zoo.timing.replay import MessageCost, replay

__all__ = ["UnitSpan", "Simulation", "simulate", "simulate_units", "predicted_latency", "replay_prefix"]


@dataclass
class UnitSpan:
    """When a device computed its unit of a layer, in the replay."""

    layer: str
    device: int
    rows: Range
    start: float
    finish: float


@dataclass
class Simulation:
    latency_s: float
    bytes_total: int
    timeline: list[UnitSpan]
    busy_s: list[float]


def simulate_units(graph: LayerGraph, units: Iterable[Unit], profile: Profile,
                   message_cost: float | MessageCost = 0.0) -> Simulation:
    """Replay ``units`` on ``profile``: latency (slowest device), bytes sent, timeline."""
    units = list(units)
    programs = plan_programs(graph, units, profile)
    played = replay(programs, profile.links(), message_cost, trace=True)
    rows = {(u.layer, u.device): u.rows for u in units}
    timeline = [UnitSpan(s.label, device, rows[(s.label, device)], s.start_s, s.end_s)
                for device, segments in enumerate(played.segments) for s in segments if (s.label, device) in rows]
    timeline.sort(key=lambda span: (span.start, span.device))
    busy = [0.0] * len(profile)
    for span in timeline:
        busy[span.device] += span.finish - span.start
    return Simulation(played.latency_s, sum(programs.bytes_per_pair.values()), timeline, busy)


def simulate(graph: LayerGraph, placement: Placement, profile: Profile,
             message_cost: float | MessageCost = 0.0) -> Simulation:
    """Predicted latency, bytes on the wire and per-device timeline of a placement."""
    return simulate_units(graph, build_units(graph, placement), profile, message_cost)


def predicted_latency(graph: LayerGraph, placement: Placement, profile: Profile,
                      cache: LayerEvents | None = None, prefix: Prefix | None = None) -> float:
    """:func:`simulate`'s latency alone (no timeline): what the planner's search compares candidates by.

    The same replay (:func:`disco_zoo.timing.replay.replay`) of the same programs as
    :func:`disco_zoo.planner.programs.plan_programs` makes from :func:`build_units`, to the
    last bit, but played layer by layer without building them (:func:`_play`): a plan's
    messages only go from a layer to a later one, so every receive of a layer's units has
    arrived once the layers before it are played. ``cache`` (one dict per graph and
    profile, e.g. one plan's search) keeps each layer's compute times (keyed on its split)
    and sends (on its split and its readers') across the many candidates that differ in a
    few layers. ``prefix`` (:func:`replay_prefix` of a placement that agrees with this one
    on the layers before its index and on their readers) continues from there.
    """
    state = Prefix.empty(len(graph), len(profile)) if prefix is None else prefix.copy()
    _replay_layers(graph, placement, profile, {} if cache is None else cache, state, len(graph))
    return max(state.clock)


def replay_prefix(graph: LayerGraph, placement: Placement, profile: Profile, cache: LayerEvents,
                  index: int) -> Prefix:
    """The replay of the layers before ``index`` (graph order), for :func:`predicted_latency` to continue.

    Why: the search tries many placements that differ only from some layer on (a stage
    re-split); their replays agree on every layer before the first one that is changed or
    sends to a changed one, so that part is played once.
    """
    state = Prefix.empty(len(graph), len(profile))
    _replay_layers(graph, placement, profile, cache, state, index)
    return state


@dataclass
class Prefix:
    """A replay stopped before layer ``index``: each device's clock, each link's next idle
    time [src][dst], and per later layer its units' latest input arrival so far."""

    index: int
    clock: list[float]
    free: list[list[float]]
    ready: list[list[float] | None]

    @classmethod
    def empty(cls, layers: int, devices: int) -> "Prefix":
        return cls(0, [0.0] * devices, [[0.0] * devices for _ in range(devices)], [None] * layers)

    def copy(self) -> "Prefix":
        """A copy to play on: what the layers from ``index`` on change (their arrivals too) is copied."""
        ready = self.ready[:self.index] + [None if r is None else list(r) for r in self.ready[self.index:]]
        return Prefix(self.index, list(self.clock), [list(f) for f in self.free], ready)



def _replay_layers(graph: LayerGraph, placement: Placement, profile: Profile, cache: LayerEvents,
                   state: Prefix, stop: int) -> None:
    """Play layers ``state.index`` .. ``stop`` - 1 of ``placement`` onto ``state``."""
    plan = cache.get(("plan",))
    if plan is None:
        plan = cache[("plan",)] = _LayerPlan.of(graph, profile)
    ids = cache.setdefault(("splits",), {})  # each distinct split a number: the keys below hash ints, not ranges
    split = [0] * state.index + [ids.setdefault(tuple(placement[layer.name]), len(ids))
                                 for layer in plan.layers[state.index:]]  # readers come later: these are all needed
    for index in range(state.index, stop):
        layer, readers = plan.layers[index], plan.readers[index]
        key = ("compute", index, split[index])
        seconds = cache.get(key)
        if seconds is None:
            seconds = cache[key] = _compute_times(layer, tuple(placement[layer.name]), profile)
        key = ("sends", index, split[index], *(split[r] for r in readers))
        sends = cache.get(key)
        if sends is None:
            sends = cache[key] = _layer_sends(graph, layer, placement, [plan.layers[r] for r in readers],
                                              readers, plan.links)
        _play(state.clock, state.free, state.ready, index, seconds, sends)
    state.index = max(state.index, stop)


LayerEvents = dict[tuple, Any]
Send = tuple[int, int, float, float]  # (receiving device, reader's index in graph order, seconds on the wire, latency)


@dataclass(frozen=True)
class _LayerPlan:
    """What :func:`predicted_latency` needs of a graph and profile whatever the placement (made once per cache)."""

    layers: list[Layer]
    readers: list[list[int]]  # per layer: its successors' indices, in graph order (the forwarding-table order)
    links: dict[tuple[int, int], Link]

    @classmethod
    def of(cls, graph: LayerGraph, profile: Profile) -> "_LayerPlan":
        layers = list(graph)
        order = {layer.name: i for i, layer in enumerate(layers)}
        readers = [sorted({order[s] for s in layer.successors}) for layer in layers]
        return cls(layers, readers, profile.links())


def _compute_times(layer: Layer, own: tuple[Range, ...], profile: Profile) -> list[float | None]:
    """Per device: its unit's compute seconds (:func:`compute_seconds`), None without rows."""
    return [compute_seconds(layer, b - a, profile.devices[dev].rate(layer.op)) if b > a else None
            for dev, (a, b) in enumerate(own)]


def _play(clock: list[float], free: list[list[float]], ready: list[list[float] | None], index: int,
          seconds: list[float | None], sends: list[list[Send]]) -> None:
    """Replay one layer: each unit starts when its device is free and its last input arrived
    (the receives' max, in any order), computes, then posts its sends FIFO per link as
    :func:`disco_zoo.timing.replay.replay` does (no message cost: the planner's replay)."""
    arrived = ready[index]
    for dev, sec in enumerate(seconds):
        if sec is not None:
            start = clock[dev] if arrived is None or arrived[dev] <= clock[dev] else arrived[dev]
            clock[dev] = start + sec
    for src, posts in enumerate(sends):
        at, links = clock[src], free[src]
        for dst, reader, wire, latency in posts:
            begin = at if at >= links[dst] else links[dst]
            links[dst] = begin + wire
            arrival = links[dst] + latency
            got = ready[reader]
            if got is None:
                got = ready[reader] = [-math.inf] * len(clock)
            if arrival > got[dst]:
                got[dst] = arrival


def _layer_sends(graph: LayerGraph, layer: Layer, placement: Placement, readers: list[Layer],
                 indices: list[int], links: dict[tuple[int, int], Link]) -> list[list[Send]]:
    """Per device: the sends of its unit of ``layer`` to its readers' units, in forwarding-table
    order (reader in graph order, then its device, then which input), as :func:`build_units` makes them."""
    haves = [(src, a, b) for src, (a, b) in enumerate(placement[layer.name]) if b > a]
    rb = row_bytes(layer)
    out: list[list[Send]] = [[] for _ in placement[layer.name]]
    for reader, index in zip(readers, indices):
        inputs = [k for k, pred in enumerate(reader.predecessors) if pred == layer.name]
        for dev, rows in enumerate(placement[reader.name]):
            if rows[0] >= rows[1]:
                continue
            for k in inputs:
                lo, hi = input_rows(reader, k, rows)
                for src, a, b in haves:
                    got = (hi if hi < b else b) - (lo if lo > a else a)
                    if got > 0 and src != dev:
                        link = links[(src, dev)]
                        out[src].append((dev, index, link.transfer_time(int(round(got * rb))), link.latency_s))
    return out
