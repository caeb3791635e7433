"""A plan's predicted latency, bytes and per-device timeline, from the model of time.

The plan's units become per-device programs (:mod:`disco_zoo.planner.programs`) and the
shared replay (:mod:`disco_zoo.timing.replay`) plays them over the profile's links: the
same engine that predicts measured DISCO runs, FIFO per ordered pair. This is what a
plan, a baseline and ``run-plan``'s prediction report; the LP chooses splits with its
own linearised per-layer cost (:mod:`disco_zoo.planner.layer_cost`), a lower bound of it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.programs import message_tag, plan_programs
from disco_zoo.planner.units import Placement, Range, Unit, build_units, compute_seconds, input_rows, row_bytes
from disco_zoo.timing.replay import ComputeProfile, Event, MessageCost, RankProgram, replay

__all__ = ["UnitSpan", "Simulation", "simulate", "simulate_units", "predicted_latency"]


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
                      cache: LayerEvents | None = None) -> float:
    """:func:`simulate`'s latency alone (no timeline): what the planner's search compares candidates by.

    The programs are the same as :func:`disco_zoo.planner.programs.plan_programs` makes
    from :func:`build_units`, event for event, but built per layer without units: a
    layer's events depend only on its own split and its inputs' splits, so ``cache``
    (one dict per graph and profile, e.g. one plan's search) reuses them across the many
    candidates that differ in a few layers.
    """
    cache = {} if cache is None else cache
    n = len(profile)
    segments: list[list[list[Event]]] = [[] for _ in range(n)]
    open_at: dict[tuple[str, int], list[Event]] = {}  # (layer, device) -> that unit's events, sends still to add
    for layer in graph:
        preds = layer.predecessors
        key = (layer.name, tuple(placement[layer.name]), *(tuple(placement[p]) for p in preds))
        found = cache.get(key)
        if found is None:
            found = cache[key] = _layer_events(graph, layer, placement, profile)
        units, sends = found
        for dev, events in units:
            segment = list(events)
            segments[dev].append(segment)
            open_at[(layer.name, dev)] = segment
        for pred, src, event in sends:
            open_at[(pred, src)].append(event)
    programs = [RankProgram(i, [e for segment in segments[i] for e in segment]) for i in range(n)]
    return replay(ComputeProfile(programs), profile.links()).latency_s


LayerEvents = dict[tuple, tuple[list[tuple[int, list[Event]]], list[tuple[str, int, Event]]]]


def _layer_events(graph: LayerGraph, layer: Layer, placement: Placement,
                  profile: Profile) -> tuple[list[tuple[int, list[Event]]], list[tuple[str, int, Event]]]:
    """One layer's share of the programs: per device with rows, its receives and compute
    (in :func:`build_units` / ``plan_programs`` order); and the sends its inputs' units
    owe it, as (input layer, sending device, event), in their forwarding-table order."""
    held = [(pred, [(src, have) for src, have in enumerate(placement[pred]) if have[1] > have[0]],
             row_bytes(graph[pred])) for pred in layer.predecessors]
    units: list[tuple[int, list[Event]]] = []
    sends: list[tuple[str, int, Event]] = []
    for dev, rows in enumerate(placement[layer.name]):
        if rows[0] >= rows[1]:
            continue
        events = []
        for k, (pred, haves, rb) in enumerate(held):
            need = input_rows(layer, k, rows)
            tag = message_tag(pred, layer.name)
            for src, have in haves:
                got = min(need[1], have[1]) - max(need[0], have[0])
                if got > 0 and src != dev:
                    events.append(Event("recv", src, tag, 0.0))
                    sends.append((pred, src, Event("send", dev, tag, 0.0, int(round(got * rb)))))
        seconds = compute_seconds(layer, rows[1] - rows[0], profile.devices[dev].rate(layer.op))
        events.append(Event("compute", -1, "", seconds, 0, layer.name))
        units.append((dev, events))
    return units, sends
