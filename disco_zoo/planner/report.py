"""Make a plan for a registered model and score it against every baseline (CLI and bench)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from disco_zoo.planner.baselines import BASELINES
from disco_zoo.planner.search import plan_edgeflow
from disco_zoo.planner.plan_io import Plan, save_plan
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.simulate import simulate


def build_graph(model_name: str, input_size: int, num_classes: int | None = None) -> Any:
    """Traced layer graph of a registry model at (1, 3, S, S)."""
    from disco_zoo.graph import trace_model
    from disco_zoo.registry import build_model

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return trace_model(build_model(model_name, **kwargs), (1, 3, input_size, input_size))


def plan_and_compare(model_name: str, graph: Any, profile: Profile, out: str | Path | None = None,
                     gantt: str | Path | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """EdgeFlow plan + predicted latency of each baseline, as one JSON-able document."""
    placement, stats = plan_edgeflow(graph, profile)
    sim = simulate(graph, placement, profile)
    baselines = {}
    for name, make in BASELINES.items():
        b = simulate(graph, make(graph, profile), profile)
        baselines[name] = {"latency_s": b.latency_s, "bytes": b.bytes_total}
    predicted = {"latency_s": sim.latency_s, "bytes": sim.bytes_total, "busy_s": sim.busy_s,
                 "origin": stats.origin, "is_baseline": stats.is_baseline}
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    plan = Plan(model_name, tuple(graph.input_shape), profile, placement, predicted, kwargs)
    if out:
        save_plan(plan, graph, out)
    if gantt:
        from disco_zoo.planner.gantt import draw_gantt

        draw_gantt(sim, profile, gantt, title=f"{model_name} on {profile.name}: {sim.latency_s * 1e3:.2f} ms")
    return {
        "model": model_name,
        "input_shape": list(graph.input_shape),
        "profile": profile.name,
        "devices": [d.name for d in profile.devices],
        "edgeflow": predicted,
        "baselines": baselines,
        "lp": {"solves": stats.lp_solves, "dp_solves": stats.dp_solves, "lp_seconds": stats.lp_seconds,
               "plan_seconds": stats.plan_seconds, "plan_cpu_seconds": stats.plan_cpu_seconds, "layers_by_lp": stats.layers_lp, "passes": stats.passes,
               "subsets_pruned": stats.subsets_pruned},
        "origin": stats.origin,
        "is_baseline": stats.is_baseline,
        "rows_per_device": {d.name: sum(1 for l in graph if placement[l.name][i][1] > placement[l.name][i][0])
                            for i, d in enumerate(profile.devices)},
        "plan": str(out) if out else None,
        "gantt": str(gantt) if gantt else None,
    }
