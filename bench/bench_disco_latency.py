"""DISCO on 2 nodes vs the dense model in one process: latency per image, ResNet-50.

    .venv/bin/python bench/bench_disco_latency.py [--input-size 224] [--keep 0.1]
        [--bandwidths 10mbit 100mbit 1gbit] [--latency 0.5ms] [--repeats 3]

Both sides use one thread per process. The DISCO model keeps a random ``--keep``
fraction of every S_kj (no trained ResNet-50 shards are published yet; latency and
traffic depend on the masks' sizes, not their values), is saved as per-node shards and
run with ``disco_zoo.runtime.disco_executor`` over MPI with every link emulated at each
bandwidth (plus the one-way latency). Per-inference latency is the slowest rank's best
of ``--repeats`` after one warm-up. Prints numbers, asserts nothing.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from disco_zoo.disco.accounting import disco_traffic, layer_shapes
from disco_zoo.disco.adapters import apply_partition, get_partition, to_disco
from disco_zoo.disco.shards import save_shards
from disco_zoo.registry import create_model
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.link import LinkProfile


def sparse_disco(arch: str, nodes: int, keep: float, seed: int = 0) -> torch.nn.Module:
    """``arch`` over ``nodes`` nodes with a random ``keep`` fraction of each S_kj open."""
    torch.manual_seed(seed)
    model = to_disco(create_model(arch), nodes).eval()
    part = get_partition(model).with_random_selection(random.Random(seed), keep)
    return apply_partition(model, part)


def dense_latency(arch: str, shape: tuple[int, ...], repeats: int) -> float:
    torch.set_num_threads(1)
    model = create_model(arch).eval()
    x = torch.randn(shape)
    best = float("inf")
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--keep", type=float, default=0.1, help="fraction of every S_kj kept open")
    parser.add_argument("--bandwidths", nargs="+", default=["10mbit", "100mbit", "1gbit"])
    parser.add_argument("--latency", default="0.5ms")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="mpi", choices=("mpi", "gloo"))
    ns = parser.parse_args()
    shape = (1, 3, ns.input_size, ns.input_size)

    model = sparse_disco(ns.arch, 2, ns.keep)
    _, per_pair = disco_traffic(get_partition(model), layer_shapes(model, shape), 4)
    first = next(iter(get_partition(model).layers.values()))
    image = 4 * len(first.in_groups[1]) * shape[2] * shape[3]  # rank 0 sends node 1 its image channels
    dense_s = dense_latency(ns.arch, shape, ns.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        save_shards(model, folder, extra={"arch": ns.arch, "args": {}})
        del model
        for bandwidth in ["unshaped", *ns.bandwidths]:
            link = None if bandwidth == "unshaped" else LinkProfile.parse(bandwidth, ns.latency)
            results = launch(
                "disco_zoo.runtime.disco_executor:run_disco", 2, ns.backend,
                args={"folder": str(folder), "input_shape": list(shape), "warmup": 1, "repeats": ns.repeats},
                timeout_s=600, link=link,
            )
            slowest = max(min(r["times_s"]) for r in results)
            sent = sum(sum(r["bytes"]["pairs"].values()) for r in results)
            rows.append((bandwidth, slowest, sent))

    table = Table(title=f"{ns.arch} {ns.input_size}px, DISCO 2 nodes (keep {ns.keep:g} of S_kj) vs dense, 1 thread each")
    for column in ("link", "DISCO ms", "dense ms", "speedup", "bytes/inference"):
        table.add_column(column, justify="right")
    for bandwidth, seconds, sent in rows:
        label = "localhost (no emulation)" if bandwidth == "unshaped" else f"{bandwidth} + {ns.latency}"
        table.add_row(label, f"{seconds * 1e3:.1f}", f"{dense_s * 1e3:.1f}", f"{dense_s / seconds:.2f}x", f"{sent:,}")
    console = Console(width=140)
    console.print(table)
    console.print(f"predicted by the accounting: {sum(per_pair.values()):,} bytes + {image:,} bytes of image to node 1")


if __name__ == "__main__":
    main()
