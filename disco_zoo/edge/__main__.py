"""``python -m disco_zoo.edge --program DIR``: one lean rank (start one per node with mpiexec)."""
from __future__ import annotations

import argparse
import os

from disco_zoo.edge.worker import main_spec

ENTRY = "disco_zoo.edge.runner:run_program"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m disco_zoo.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--program", required=True, help="export root (rank k runs node{k}/) or one node folder")
    parser.add_argument("--input", default=None, help=".npy input of the program's shape (rank 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input without --input")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a peer")
    parser.add_argument("--wire-dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--bandwidth", default=None, help="emulated link, e.g. 100mbit")
    parser.add_argument("--latency", default=None, help="emulated one-way latency, e.g. 2ms")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out-dir", default=None, help="write rank<k>.json here instead of stdout")
    parser.add_argument("--iface", default=os.environ.get("DISCO_ZOO_IFACE"))
    ns = parser.parse_args(argv)
    from disco_zoo.timing.links import Link

    link = Link.parse(ns.bandwidth, ns.latency)
    args = {"program": ns.program, "input_path": ns.input, "seed": ns.seed, "warmup": ns.warmup,
            "repeats": ns.repeats, "threads": ns.threads}
    main_spec({"entry": ENTRY, "args": args, "backend": "mpi", "timeout_s": ns.timeout, "wire_dtype": ns.wire_dtype,
               "link": None if link.is_ideal else link.to_dict(), "threads_per_rank": ns.threads,
               "out_dir": ns.out_dir, "iface": ns.iface})


if __name__ == "__main__":
    main()
