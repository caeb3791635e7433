"""Plans are data: a JSON document of execution units that any runtime can execute.

The document records the model, input shape and profile it was made for, every
layer's per-device row ranges, and the units derived from them (input requirements,
operator = layer name, forwarding table). The units are what ``run-plan`` executes;
:func:`check_plan` compares the plan with the traced model (layers, shapes, ranges, and
every stored unit against the unit the model and placement give), so a plan made for
another model or input size, or with edited units, fails with one clear error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import LayerGraph
from disco_zoo.planner.profiles import Profile, profile_from_dict
from disco_zoo.planner.units import Placement, Unit, build_units, extent

FORMAT = "disco-zoo.edgeflow-plan"
VERSION = 1


@dataclass
class Plan:
    model: str
    input_shape: tuple[int, ...]
    profile: Profile
    placement: Placement
    predicted: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. num_classes, to rebuild the model
    shapes: dict[str, list[int]] = field(default_factory=dict)  # layer -> output shape, filled on load
    units: list[Unit] | None = None  # the stored units (filled on load); None: derived from the placement

    def to_dict(self, graph: LayerGraph) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": self.model,
            "model_kwargs": self.model_kwargs,
            "input_shape": list(self.input_shape),
            "dtype_bytes": graph.dtype_bytes,
            "profile": self.profile.to_dict(),
            "layers": [{"name": l.name, "op": l.op, "rows": extent(l),
                        "shape": list(l.output_shape),
                        "ranges": [list(r) for r in self.placement[l.name]]} for l in graph],
            "units": [u.to_dict() for u in (self.units if self.units is not None else build_units(graph, self.placement))],
            "predicted": self.predicted,
        }


def save_plan(plan: Plan, graph: LayerGraph, path: str | Path) -> None:
    Path(path).write_text(json.dumps(plan.to_dict(graph), indent=1))


def load_plan(path: str | Path) -> tuple[Plan, dict[str, Any]]:
    """The plan (its stored units as :class:`Unit` objects) and its raw document; checks
    the format, not the model (that is :func:`check_plan`)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DiscoZooError(f"cannot read plan {path}: {err}") from err
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise DiscoZooError(f"{path} is not an EdgeFlow plan (expected \"format\": \"{FORMAT}\")")
    try:
        placement = {l["name"]: [tuple(r) for r in l["ranges"]] for l in raw["layers"]}
        plan = Plan(raw["model"], tuple(raw["input_shape"]), profile_from_dict(raw["profile"], f"{path} profile"),
                    placement, raw.get("predicted", {}), dict(raw.get("model_kwargs", {})),
                    {l["name"]: list(l.get("shape", [])) for l in raw["layers"]},
                    [Unit.from_dict(u) for u in raw["units"]])
    except (KeyError, TypeError, ValueError) as err:
        raise DiscoZooError(f"{path}: malformed plan, missing or bad field {err}") from err
    return plan, raw


def check_plan(plan: Plan, graph: LayerGraph) -> None:
    """Raise if the plan was not made for this traced model, does not cover every row
    once, or its stored units are not the ones its placement gives (:func:`check_units`)."""
    names = [l.name for l in graph]
    if list(plan.placement) != names:
        missing = [n for n in names if n not in plan.placement][:3]
        extra = [n for n in plan.placement if n not in names][:3]
        raise DiscoZooError(
            f"plan does not match model {plan.model!r} at input {tuple(graph.input_shape)}: "
            f"layers missing from the plan {missing}, unknown to the model {extra}. Re-run `disco-zoo plan`.")
    n = len(plan.profile)
    for layer in graph:
        shape = plan.shapes.get(layer.name)
        if shape and list(shape) != list(layer.output_shape):
            raise DiscoZooError(
                f"plan layer {layer.name!r} has output shape {tuple(shape)} but the model gives "
                f"{tuple(layer.output_shape)}: the plan was made for another model, input size or class count")
        ranges = sorted(r for r in plan.placement[layer.name] if r[0] < r[1])
        h = extent(layer)
        if len(plan.placement[layer.name]) != n:
            raise DiscoZooError(f"plan layer {layer.name!r} has {len(plan.placement[layer.name])} ranges for {n} devices")
        pos = 0
        for a, b in ranges:
            if a != pos:
                break
            pos = b
        if pos != h or not ranges:
            raise DiscoZooError(
                f"plan layer {layer.name!r} does not cover its {h} rows exactly once: {plan.placement[layer.name]}; "
                "the plan was made for another model or input size")
    check_units(plan, graph)


def check_units(plan: Plan, graph: LayerGraph) -> None:
    """Raise unless the plan's stored units are exactly the units that the traced model
    and the plan's placement give (what ``run-plan`` executes must be what was planned
    and predicted). The error names the first layer, in topological order, that differs."""
    if plan.units is None:
        return
    want: dict[tuple[str, int], Unit] = {(u.layer, u.device): u for u in build_units(graph, plan.placement)}
    have: dict[tuple[str, int], Unit] = {}
    for u in plan.units:
        if (u.layer, u.device) in have:
            raise DiscoZooError(f"plan has two units for layer {u.layer!r} on device {u.device}; re-run `disco-zoo plan`")
        have[(u.layer, u.device)] = u
    for layer in graph:
        for device in range(len(plan.profile)):
            key = (layer.name, device)
            if want.get(key) != have.get(key):
                what = ("missing" if key not in have else "not a unit of this placement" if key not in want
                        else "different input requirements or forwarding table")
                raise DiscoZooError(
                    f"plan units do not match model {plan.model!r}: the unit of layer {layer.name!r} on device "
                    f"{device} ({plan.profile.devices[device].name}) is {what}. The plan was edited or made for "
                    "another model; re-run `disco-zoo plan`.")
    extra = sorted(set(have) - set(want))
    if extra:
        raise DiscoZooError(f"plan has units for layers the model does not have, e.g. {extra[0][0]!r}; "
                            "re-run `disco-zoo plan`")
