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
from typing import Any

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
    device's events for a layer are its receives and compute, which depend only on the
    layer's split and its inputs' (:func:`_unit_events`), then its sends, which depend
    only on the layer's split and its readers' (:func:`_send_events`). ``cache`` (one
    dict per graph and profile, e.g. one plan's search) reuses them across the many
    candidates that differ in a few layers.
    """
    cache = {} if cache is None else cache
    order = cache.get(("order",))
    if order is None:
        order = cache[("order",)] = {layer.name: i for i, layer in enumerate(graph)}
    events: list[list[Event]] = [[] for _ in range(len(profile))]
    for layer in graph:
        own = tuple(placement[layer.name])
        key = ("in", layer.name, own, *(tuple(placement[p]) for p in layer.predecessors))
        ins = cache.get(key)
        if ins is None:
            ins = cache[key] = _unit_events(graph, layer, placement, profile)
        key = ("out", layer.name, own, *(tuple(placement[s]) for s in layer.successors))
        outs = cache.get(key)
        if outs is None:
            outs = cache[key] = _send_events(graph, layer, placement, sorted(set(layer.successors), key=order.get))
        for device, (received, sent) in enumerate(zip(ins, outs)):
            events[device].extend(received)
            events[device].extend(sent)
    programs = [RankProgram(i, device_events) for i, device_events in enumerate(events)]
    return replay(ComputeProfile(programs), profile.links()).latency_s


LayerEvents = dict[tuple, Any]


def _unit_events(graph: LayerGraph, layer: Layer, placement: Placement, profile: Profile) -> list[list[Event]]:
    """Per device: its receives for its unit of ``layer`` and the compute mark (none without rows)."""
    held = [(pred, [(src, have) for src, have in enumerate(placement[pred]) if have[1] > have[0]])
            for pred in layer.predecessors]
    out: list[list[Event]] = []
    for dev, rows in enumerate(placement[layer.name]):
        events: list[Event] = []
        if rows[0] < rows[1]:
            for k, (pred, haves) in enumerate(held):
                need = input_rows(layer, k, rows)
                tag = message_tag(pred, layer.name)
                events.extend(Event("recv", src, tag, 0.0) for src, have in haves
                              if src != dev and min(need[1], have[1]) > max(need[0], have[0]))
            seconds = compute_seconds(layer, rows[1] - rows[0], profile.devices[dev].rate(layer.op))
            events.append(Event("compute", -1, "", seconds, 0, layer.name))
        out.append(events)
    return out


def _send_events(graph: LayerGraph, layer: Layer, placement: Placement, successors: list[str]) -> list[list[Event]]:
    """Per device: the sends of its unit of ``layer`` to its readers' units, in forwarding-table
    order (reader in graph order, then its device, then which input)."""
    haves = placement[layer.name]
    rb = row_bytes(layer)
    out: list[list[Event]] = [[] for _ in haves]
    for name in successors:
        reader = graph[name]
        tag = message_tag(layer.name, name)
        inputs = [k for k, pred in enumerate(reader.predecessors) if pred == layer.name]
        for dev, rows in enumerate(placement[name]):
            if rows[0] >= rows[1]:
                continue
            for k in inputs:
                need = input_rows(reader, k, rows)
                for src, have in enumerate(haves):
                    got = min(need[1], have[1]) - max(need[0], have[0])
                    if got > 0 and src != dev and have[1] > have[0]:
                        out[src].append(Event("send", dev, tag, 0.0, int(round(got * rb))))
    return out
