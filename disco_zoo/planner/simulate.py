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

from disco_zoo.graph import LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.programs import plan_programs
from disco_zoo.planner.units import Placement, Range, Unit, build_units
from disco_zoo.timing.replay import MessageCost, replay

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


def predicted_latency(graph: LayerGraph, placement: Placement, profile: Profile) -> float:
    """:func:`simulate`'s latency alone (no timeline): what the planner's search compares candidates by."""
    programs = plan_programs(graph, build_units(graph, placement), profile)
    return replay(programs, profile.links()).latency_s
