"""DISCO on N ranks vs the dense model in one process: latency, memory, model of time.

    .venv/bin/python bench/bench_disco_latency.py [--model resnet50_disco_2node.digits]
        [--keep F] [--input-size 224] [--bandwidths 10mbit 100mbit 1gbit] [--repeats 11]

By default the published, trained ``resnet50_disco_2node.digits`` (sparsified to at most
0.2 of dense within-layer parallelism's traffic and 0.3 of the dense parameters per node)
is timed at 224x224, batch 1, one thread per process, over MPI on localhost; ``--keep F``
instead keeps a random fraction F of every S_kj of an untrained ``--arch`` (latency
depends on the masks' sizes, not their values).
Measurements are ``disco_zoo.harness.latency.measure_latencies`` (the eval harness's own):
dense in one process, DISCO and dense within-layer parallelism (TP) on N ranks, each
rank's compute alone, and the model of time's prediction for every emulated link. Prints
the ratios the runtime issue targets, measured in this one run; asserts nothing.
"""
from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from disco_zoo.disco.adapters import apply_partition, get_partition, to_disco
from disco_zoo.disco.shards import save_shards
from disco_zoo.harness.latency import dense_tp_copy, load_dense_measured, measure_latencies
from disco_zoo.harness.options import DEFAULT_ROUNDS, EvalOptions
from disco_zoo.hub import load, resolve_folder
from disco_zoo.registry import build_model
from disco_zoo.store import load_folder_config


def random_disco(arch: str, nodes: int, keep: float, seed: int = 0) -> torch.nn.Module:
    """``arch`` over ``nodes`` nodes with a random ``keep`` fraction of each S_kj open."""
    torch.manual_seed(seed)
    model = to_disco(build_model(arch), nodes).eval()
    part = get_partition(model).with_random_selection(random.Random(seed), keep)
    return apply_partition(model, part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50_disco_2node.digits", help="a published DISCO model")
    parser.add_argument("--keep", type=float, default=None, help="instead: random fraction of every S_kj kept")
    parser.add_argument("--arch", default="resnet50", help="with --keep: the dense architecture")
    parser.add_argument("--nodes", type=int, default=2, help="with --keep: number of nodes")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--bandwidths", nargs="+", default=["10mbit", "100mbit", "1gbit"])
    parser.add_argument("--repeats", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--backend", default="mpi", choices=("mpi", "gloo"))
    ns = parser.parse_args()
    opts = EvalOptions(bandwidths=tuple(ns.bandwidths), backend=ns.backend, repeats=ns.repeats, warmup=2)

    with tempfile.TemporaryDirectory() as tmp:
        if ns.keep is None:
            dense_name = load_folder_config(resolve_folder(ns.model)).dense  # the dense counterpart, arch.tag
            if not dense_name:
                parser.error(f"{ns.model}'s config names no dense counterpart ('dense'); use --keep instead")
            _, dense_growth = load_dense_measured(dense_name)  # measured in this fresh process, before anything else
            model, folder = load(ns.model).eval(), resolve_folder(ns.model)
            title = ns.model
        else:
            model = random_disco(ns.arch, ns.nodes, ns.keep)
            folder = save_shards(model, Path(tmp) / "disco", extra={"arch": ns.arch, "args": {}})
            dense_name, title = ns.arch, f"{ns.arch}, random keep {ns.keep:g} of every S_kj"
            dense_growth = None
        nodes = get_partition(model).nodes
        tp_folder = dense_tp_copy(model, Path(folder), Path(tmp) / "dense_tp")
        lat = measure_latencies(Path(folder), tp_folder, dense_name, nodes, [1, 3, ns.input_size, ns.input_size], opts,
                                progress=lambda text: print(text, flush=True), link_warmup=1, link_repeats=2)

    console = Console(width=150)
    rounds = lat.per_round
    spread = lambda values: f"{min(values):.0f}-{max(values):.0f} ms"  # noqa: E731
    console.print(f"{title}, {ns.input_size}x{ns.input_size}, batch 1, 1 thread per process, {ns.backend}; "
                  f"{lat.rounds} interleaved rounds (ratios: median of per-round ratios)")
    console.print(f"dense, one process: {lat.dense_single_ms:.1f} ms ({spread(rounds.dense_ms)}); DISCO localhost: "
                  f"{lat.disco_localhost_ms:.1f} ms ({spread(rounds.disco_ms)}) -> "
                  f"{lat.speedup_localhost_vs_dense:.2f}x (target >= 2x)")
    console.print(f"slowest rank's compute alone: {max(lat.compute_alone_ms):.1f} ms ({spread(rounds.compute_alone_ms)}); "
                  f"DISCO localhost is {lat.localhost_over_compute_alone:.2f}x of it (target <= 1.15)")
    console.print(f"  every rank's compute at once (no wire): {max(lat.compute_concurrent_ms):.1f} ms; DISCO localhost is "
                  f"{lat.localhost_over_compute_concurrent:.2f}x of it")
    console.print(f"  ceiling with idle cores, dense / compute alone: {lat.speedup_ceiling_compute_alone:.2f}x; ranks computing "
                  f"at once take {lat.concurrency_penalty:.2f}x their time alone (contention on this machine)")
    growth = max(lat.rank_rss_load_growth_bytes)
    console.print(f"RSS growth loading a shard: {growth / 2**20:.0f} MiB = {growth / lat.dense_weight_bytes:.2f} of the "
                  f"dense model's fp32 weights ({lat.dense_weight_bytes / 2**20:.0f} MiB)")
    if dense_growth:
        console.print(f"  and {growth / dense_growth:.2f} of the RSS growth of one process loading the dense model "
                      f"({dense_growth / 2**20:.0f} MiB) (target <= 0.55)")
    console.print(f"model of time: each rank's compute (measured in the same launch, all ranks at once) + links + "
                  f"{lat.message_overhead_ms:.3f} ms per message + {lat.message_ms_per_mib:.3f} ms per MiB on arrival, "
                  f"{lat.message_send_ms:.3f} ms + {lat.message_send_ms_per_mib:.3f} ms per MiB of the sender's time "
                  "(ping-pongs of 1 KB and 1 MiB through the emulated transport)")
    table = Table(title="emulated links (every ordered pair)")
    for column in ("link", "DISCO ms", "predicted", "meas/pred", "dense TP ms", "predicted", "meas/pred",
                   "DISCO vs TP", "DISCO vs dense"):
        table.add_column(column, justify="right")
    for link in lat.links:
        table.add_row(link.bandwidth, f"{link.disco_ms:.0f}", f"{link.disco_predicted_ms:.0f}",
                      f"{link.disco_measured_over_predicted:.2f}", f"{link.dense_tp_ms:.0f}",
                      f"{link.dense_tp_predicted_ms:.0f}", f"{link.dense_tp_measured_over_predicted:.2f}",
                      f"{link.speedup_vs_dense_tp:.2f}x", f"{link.speedup_vs_dense_single:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
