"""EdgeFlow vs the baselines: predicted (and optionally measured) latency per image.

    .venv/bin/python bench/bench_edgeflow.py [--input-size 224] [--models resnet50 googlenet
        densenet121 mobilenet_v2] [--profiles wifi-pi4-nano-phone ethernet-pi4-nano-phone
        wifi-phone-pi4x2 four-mixed-ethernet] [--measure --measure-size 32 --slowdown 20]
        [--out bench_edgeflow.json]

Predicted: the EdgeFlow plan and every baseline scored by the planner's simulator with
the preset profile. LP: HiGHS solve time and total planning time of each plan (the
ResNet-50 / four-device row is the one to quote). ``--measure`` also runs the EdgeFlow
plan at ``--measure-size`` with the executor (one MPI process per device, unit compute
stretched to the profile slowed down ``--slowdown`` times, links ideal) and prints
measured vs predicted for that run. Prints numbers, asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from disco_zoo.planner import load_profile
from disco_zoo.planner.report import build_graph, plan_and_compare

MODELS = ["resnet50", "googlenet", "densenet121", "mobilenet_v2"]
PROFILES = ["wifi-pi4-nano-phone", "ethernet-pi4-nano-phone", "wifi-phone-pi4x2", "four-mixed-ethernet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--measure-size", type=int, default=32)
    ap.add_argument("--slowdown", type=float, default=20.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    baselines = ["single-fastest", "equal-split", "proportional-split", "layer-wise"]
    table = Table(title=f"EdgeFlow predicted latency (ms), input {args.input_size}x{args.input_size}")
    for col in ["model", "profile", "edgeflow", *baselines, "best baseline / edgeflow", "MB sent", "LP s", "plan s"]:
        table.add_column(col, justify="right" if col not in ("model", "profile") else "left")
    for model in args.models:
        graph = build_graph(model, args.input_size, 10)
        for name in args.profiles:
            rep = plan_and_compare(model, graph, load_profile(name), num_classes=10)
            ef = rep["edgeflow"]["latency_s"]
            best = min(b["latency_s"] for b in rep["baselines"].values())
            rows.append(rep)
            table.add_row(model, name, f"{ef * 1e3:.1f}", *[f"{rep['baselines'][b]['latency_s'] * 1e3:.1f}"
                                                            for b in baselines],
                          f"{best / ef:.2f}x", f"{rep['edgeflow']['bytes'] / 1e6:.2f}",
                          f"{rep['lp']['lp_seconds']:.2f}", f"{rep['lp']['plan_seconds']:.2f}")
    console = Console(width=200)
    console.print(table)
    if args.measure:
        from disco_zoo.runtime.edgeflow_executor import execute_plan

        mt = Table(title=f"executor, input {args.measure_size}, rates / {args.slowdown:g}, ideal links")
        for col in ["model", "profile", "measured ms", "predicted ms", "bytes measured", "bytes predicted"]:
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
                               f"{run['predicted_this_run_s'] * 1e3:.1f}", str(run["bytes_measured"]),
                               str(run["bytes_predicted"]))
        console.print(mt)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
