"""One-way message latency through the Transport: MPI vs gloo, 1 KB and 4 MB.

    .venv/bin/python bench/bench_backends.py [--iters 50]

Two ranks on this machine ping-pong a float32 tensor; one-way latency is half the round
trip (median and minimum over ``--iters`` after 5 warm-up trips). Prints numbers, asserts
nothing: the machine is shared, so read them as an order of magnitude.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from disco_zoo.runtime.calibrate import PINGPONG_ENTRY
from disco_zoo.runtime.launch import launch

SIZES = {"1 KB": 1024, "4 MB": 4 * 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--backends", nargs="+", default=["mpi", "gloo"])
    ns = parser.parse_args()
    table = Table(title=f"one-way latency, 2 ranks on localhost, median (min) of {ns.iters}")
    table.add_column("message")
    for backend in ns.backends:
        table.add_column(backend, justify="right")
    for label, nbytes in SIZES.items():
        row = [label]
        for backend in ns.backends:
            res = launch(PINGPONG_ENTRY, 2, backend, args={"nbytes": nbytes, "iters": ns.iters}, timeout_s=60)[0]
            row.append(f"{_fmt(res['median_s'])} ({_fmt(res['min_s'])})")
        table.add_row(*row)
    Console().print(table)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


if __name__ == "__main__":
    main()
