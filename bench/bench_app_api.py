"""Calls per second at batch 1 on localhost: the persistent model vs one `disco-zoo run` a call.

    .venv/bin/python bench/bench_app_api.py [--model resnet50_disco_2node.digits] [--calls 50] [--runs 3]

The persistent side opens ``disco_zoo.distributed(MODEL)`` once (its start-up is printed
apart), makes 3 untimed calls, then ``--calls`` timed calls of one (1, C, H, W) image.
The one-shot side runs the command a user would, ``disco-zoo run MODEL --json``, ``--runs``
times (each starts the ranks, loads the shards, infers once and stops). Both on the same
backend (MPI by default). Prints numbers and their ratio from this one run; asserts
nothing: the machine is shared, so read them as an order of magnitude.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from rich.console import Console
from rich.table import Table

import disco_zoo


def persistent(model: str, calls: int, backend: str) -> tuple[float, float, float]:
    """(start-up s, calls per second, bytes on the wire per call)."""
    start = time.perf_counter()
    with disco_zoo.distributed(model, backend=backend) as session:
        opened = time.perf_counter() - start
        x = torch.randn(1, *session.pretrained_cfg.input_size)
        for _ in range(3):
            session(x)
        t0 = time.perf_counter()
        for _ in range(calls):
            session(x)
        rate = calls / (time.perf_counter() - t0)
    total = sum(session.traffic["pairs"].values())
    return opened, rate, total / session.calls


def one_shot(model: str, runs: int, backend: str) -> tuple[float, float, float]:
    """(calls per second, bytes on the wire per call, the fastest inference alone in s, as
    rank 0 timed it inside the run) of ``disco-zoo run`` as a command."""
    cmd = [sys.executable, "-m", "disco_zoo.cli", "run", model, "--backend", backend, "--json"]
    inference = []
    t0 = time.perf_counter()
    for _ in range(runs):
        report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        inference.append(report["ranks"][0]["time_s"])
    return runs / (time.perf_counter() - t0), report["bytes_total"], min(inference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50_disco_2node.digits")
    parser.add_argument("--calls", type=int, default=50, help="timed calls of the persistent model")
    parser.add_argument("--runs", type=int, default=3, help="one-shot `disco-zoo run` commands")
    parser.add_argument("--backend", default="mpi", choices=("mpi", "gloo"))
    ns = parser.parse_args()
    torch.set_num_threads(1)
    opened, rate, bytes_persistent = persistent(ns.model, ns.calls, ns.backend)
    shot_rate, bytes_shot, inference_s = one_shot(ns.model, ns.runs, ns.backend)
    table = Table(title=f"{ns.model}, batch 1, {ns.backend} on localhost (one run)")
    for column in ("path", "calls/s", "ms/call", "bytes/call"):
        table.add_column(column, justify="right")
    table.add_row(f"disco_zoo.distributed ({ns.calls} calls)", f"{rate:.2f}", f"{1e3 / rate:.1f}", f"{bytes_persistent:,.0f}")
    table.add_row(f"disco-zoo run ({ns.runs} commands)", f"{shot_rate:.3f}", f"{1e3 / shot_rate:.0f}", f"{bytes_shot:,}")
    table.add_row("  its inference alone (fastest, rank 0)", f"{1 / inference_s:.2f}", f"{inference_s * 1e3:.1f}", "")
    console = Console()
    console.print(table)
    console.print(f"persistent / one-shot: {rate / shot_rate:.0f}x calls per second; "
                  f"the session's start-up (ranks started, shards loaded): {opened:.1f} s, once")


if __name__ == "__main__":
    main()
