"""EdgeFlow: planning time old vs new, and EdgeFlow vs every baseline, as ratios from one run.

    .venv/bin/python bench/bench_edgeflow.py [--input-size 224] [--models resnet50 googlenet
        densenet121 mobilenet_v2] [--profiles wifi-pi4-nano-phone ethernet-pi4-nano-phone
        wifi-phone-pi4x2 four-mixed-ethernet] [--old resnet50:four-mixed-ethernet ...]
        [--measure --measure-size 32 --slowdown 20] [--out bench_edgeflow.json]

Table 1 (predicted, the model of time's replay of each plan on the preset profile): the
EdgeFlow plan, every baseline, each baseline's latency over EdgeFlow's (> 1: EdgeFlow is
faster), which candidate won, and the planning time (wall and CPU seconds).

Table 2 (``--old MODEL:PROFILE``, default the ResNet-50 and DenseNet-121 four-device rows):
planning time of the old path (greedy per-layer HiGHS LPs over every device subset,
``planner.lp.plan_edgeflow_lp``) against the new one (``planner.search.plan_edgeflow``),
in total and per layer of the graph, and old / new as a ratio, both measured in this run;
and the two plans' predicted latencies. ``--old none`` skips it (the old path takes
seconds to minutes per row).

``--measure`` also runs the EdgeFlow plan at ``--measure-size`` with the executor (one MPI
process per device, unit compute stretched to the profile slowed down ``--slowdown``
times, links ideal) and prints measured vs predicted. Prints numbers, asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from disco_zoo.planner import load_profile
from disco_zoo.planner.baselines import BASELINES
from disco_zoo.planner.lp import plan_edgeflow_lp
from disco_zoo.planner.report import build_graph, plan_and_compare
from disco_zoo.planner.search import plan_edgeflow
from disco_zoo.planner.simulate import simulate

MODELS = ["resnet50", "googlenet", "densenet121", "mobilenet_v2"]
PROFILES = ["wifi-pi4-nano-phone", "ethernet-pi4-nano-phone", "wifi-phone-pi4x2", "four-mixed-ethernet"]
OLD = ["resnet50:four-mixed-ethernet", "densenet121:four-mixed-ethernet"]


def _timed(fn, *args):  # noqa: ANN001, ANN202
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def compare_plans(graphs: dict, args: argparse.Namespace, console: Console) -> list[dict]:
    rows = []
    table = Table(title=f"EdgeFlow predicted latency (ms), input {args.input_size}x{args.input_size}")
    names = list(BASELINES)
    for col in ["model", "profile", "edgeflow", *names, *[f"{b} / ef" for b in names], "won by", "plan s", "cpu s"]:
        table.add_column(col, justify="left" if col in ("model", "profile", "won by") else "right")
    for model in args.models:
        graph = graphs[model]
        for name in args.profiles:
            wall, cpu = time.perf_counter(), time.process_time()
            rep = plan_and_compare(model, graph, load_profile(name), num_classes=10)
            rep["bench_wall_s"], rep["bench_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
            ef = rep["edgeflow"]["latency_s"]
            rows.append(rep)
            table.add_row(model, name, f"{ef * 1e3:.1f}",
                          *[f"{rep['baselines'][b]['latency_s'] * 1e3:.1f}" for b in names],
                          *[f"{rep['baselines'][b]['latency_s'] / ef:.3f}x" for b in names],
                          rep["origin"], f"{rep['lp']['plan_seconds']:.3f}", f"{rep['lp']['plan_cpu_seconds']:.3f}")
    console.print(table)
    return rows


def compare_old(graphs: dict, cases: list[str], console: Console) -> list[dict]:
    rows = []
    table = Table(title="planning time, old path (per-layer HiGHS LPs) vs new (exact DP + search), one run")
    for col in ["model", "profile", "layers", "old s", "new s", "old ms/layer", "new ms/layer", "old / new",
                "old cpu / new cpu", "HiGHS solves", "DP solves", "old plan ms", "new plan ms", "old / new latency"]:
        table.add_column(col, justify="left" if col in ("model", "profile") else "right")
    for case in cases:
        model, name = case.split(":")
        graph, profile = graphs.get(model) or build_graph(model, 224, 10), load_profile(name)
        (old, old_stats), old_s, old_cpu = _timed(plan_edgeflow_lp, graph, profile)
        (new, new_stats), new_s, new_cpu = _timed(plan_edgeflow, graph, profile)
        old_lat, new_lat = simulate(graph, old, profile).latency_s, simulate(graph, new, profile).latency_s
        n = len(graph)
        rows.append({"model": model, "profile": name, "layers": n, "old_s": old_s, "new_s": new_s,
                     "old_cpu_s": old_cpu, "new_cpu_s": new_cpu, "lp_solves": old_stats.lp_solves,
                     "dp_solves": new_stats.dp_solves, "old_latency_s": old_lat, "new_latency_s": new_lat})
        table.add_row(model, name, str(n), f"{old_s:.2f}", f"{new_s:.3f}", f"{old_s / n * 1e3:.2f}",
                      f"{new_s / n * 1e3:.3f}", f"{old_s / new_s:.0f}x", f"{old_cpu / new_cpu:.0f}x",
                      str(old_stats.lp_solves), str(new_stats.dp_solves), f"{old_lat * 1e3:.1f}",
                      f"{new_lat * 1e3:.1f}", f"{old_lat / new_lat:.3f}x")
    console.print(table)
    return rows


def measure(args: argparse.Namespace, console: Console) -> list[dict]:
    from disco_zoo.runtime.edgeflow_executor import execute_plan

    rows = []
    mt = Table(title=f"executor, input {args.measure_size}, rates / {args.slowdown:g}, ideal links")
    for col in ["model", "profile", "measured ms", "predicted ms", "measured / predicted", "bytes measured",
                "bytes predicted"]:
        mt.add_column(col)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            graph = build_graph(model, args.measure_size, 10)
            for name in args.profiles:
                path = Path(tmp) / "plan.json"
                plan_and_compare(model, graph, load_profile(name), path, num_classes=10)
                run = execute_plan(str(path), stretch=True, slowdown=args.slowdown, timeout_s=300)
                rows.append({"measured": run, "model": model, "profile": name})
                mt.add_row(model, name, f"{run['measured_latency_s'] * 1e3:.1f}",
                           f"{run['predicted_this_run_s'] * 1e3:.1f}",
                           f"{run['measured_latency_s'] / run['predicted_this_run_s']:.2f}",
                           str(run["bytes_measured"]), str(run["bytes_predicted"]))
    console.print(mt)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    ap.add_argument("--old", nargs="+", default=OLD, help="MODEL:PROFILE rows to time the old path on, or none")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--measure-size", type=int, default=32)
    ap.add_argument("--slowdown", type=float, default=20.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    console = Console(width=260)
    graphs = {model: build_graph(model, args.input_size, 10) for model in args.models}
    out = {"plans": compare_plans(graphs, args, console)}
    if args.old != ["none"]:
        out["old_vs_new"] = compare_old(graphs, args.old, console)
    if args.measure:
        out["measured"] = measure(args, console)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
