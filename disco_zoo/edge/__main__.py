"""``python -m disco_zoo.edge --program DIR``: one lean rank (start one per node with mpiexec).

The runtime's worker with the lean runner as its entry: the same result line (or
``rank<k>.json`` with ``--out-dir``), the same failure handling, no torch.
"""
from __future__ import annotations

import argparse
import json
import os

ENTRY = "disco_zoo.edge.runner:run_program"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m disco_zoo.edge", description=__doc__.split("\n")[0])
    parser.add_argument("--program", required=True, help="export root (rank k runs node{k}/) or one node folder")
    parser.add_argument("--input", default=None, help=".npy input of the program's shape (rank 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input without --input")
    parser.add_argument("--timeout", default="60", help="seconds to wait for a peer")
    parser.add_argument("--wire-dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--bandwidth", default=None, help="emulated link, e.g. 100mbit")
    parser.add_argument("--latency", default=None, help="emulated one-way latency, e.g. 2ms")
    parser.add_argument("--threads", default="1", help="onnxruntime threads")
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out-dir", default=None, help="write rank<k>.json here instead of stdout")
    parser.add_argument("--iface", default=os.environ.get("DISCO_ZOO_IFACE"))
    ns = parser.parse_args(argv)
    from disco_zoo.runtime import worker

    args = {"program": ns.program, "input_path": ns.input, "seed": ns.seed, "warmup": ns.warmup, "repeats": ns.repeats}
    forwarded = ["--entry", ENTRY, "--args", json.dumps(args), "--backend", "mpi", "--timeout", ns.timeout,
                 "--wire-dtype", ns.wire_dtype, "--threads", ns.threads]
    for flag, value in (("--bandwidth", ns.bandwidth), ("--latency", ns.latency), ("--out-dir", ns.out_dir),
                        ("--iface", ns.iface)):
        if value:
            forwarded += [flag, value]
    worker.main(forwarded)


if __name__ == "__main__":
    main()
