"""EdgeFlow plans as per-device programs, for the model of time to replay.

Why: the replay (:mod:`disco_zoo.timing.replay`) that predicts a measured DISCO run
also predicts an EdgeFlow plan, so every strategy is scored by the same engine. A DISCO
program is measured; an EdgeFlow program is *derived* from the plan's units and the
profile, in the order the executor (:mod:`disco_zoo.runtime.edgeflow_executor`) runs
them: for each of the device's units in topological order,

* a ``recv`` for each input piece another device holds (its forwarding table sends it);
* a ``compute`` step of the unit's FLOPs over the device's rate for that op, labelled
  with the layer (so a Gantt chart can name it);
* a ``send`` per forwarding-table entry to another device, with its bytes.

A message's tag is ``"from>to"`` (the producing and consuming layer); messages with the
same tag between one pair are matched in order, as the backends match them.
"""
from __future__ import annotations

from collections.abc import Iterable

from disco_zoo.graph import LayerGraph
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.units import Unit, compute_seconds
from disco_zoo.timing.replay import ComputeProfile, Event, RankProgram

__all__ = ["plan_programs", "message_tag"]


def message_tag(from_layer: str, to_layer: str) -> str:
    """The name of the message carrying ``from_layer``'s rows to a unit of ``to_layer``."""
    return f"{from_layer}>{to_layer}"


def plan_programs(graph: LayerGraph, units: Iterable[Unit], profile: Profile) -> ComputeProfile:
    """Every device's program for ``units`` on ``profile`` (see module doc)."""
    by_layer: dict[str, list[Unit]] = {}
    for unit in units:
        by_layer.setdefault(unit.layer, []).append(unit)
    programs = [RankProgram(i) for i in range(len(profile))]
    for layer in graph:
        for unit in by_layer.get(layer.name, []):
            me, events = unit.device, programs[unit.device].events
            for req in unit.inputs:
                for src in req.sources:
                    if src.device != me:
                        events.append(Event("recv", src.device, message_tag(req.layer, layer.name), 0.0))
            seconds = compute_seconds(layer, unit.rows[1] - unit.rows[0], profile.devices[me].rate(layer.op))
            events.append(Event("compute", -1, "", seconds, 0, layer.name))
            for f in unit.forward:
                if f.device != me:
                    events.append(Event("send", f.device, message_tag(layer.name, f.layer), 0.0, f.bytes))
    return ComputeProfile(programs)
