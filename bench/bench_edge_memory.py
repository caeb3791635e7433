"""Nodes without PyTorch: memory and speed of an onnx-engine rank against torch and dense.

    .venv/bin/python bench/bench_edge_memory.py [--model resnet50_disco_2node.digits]
        [--input-size 224] [--repeats 11] [--out FILE.json]

For the published 2-node DISCO model at 224x224, batch 1, one thread per process, MPI
on localhost, it measures in one run:

* peak RSS (VmHWM; a torch rank's maxrss) of an onnx-engine rank, a torch-engine rank, one
  dense torch process and one dense onnxruntime process, with a breakdown: interpreter
  plus libraries (RSS once imported), weights (RSS growth while loading), activations
  (peak less the loaded RSS; load transients included);
* localhost latency of the onnx engine against the torch engine (median of ``--repeats``);
* each onnx rank's compute alone (its program with the exchanges taken out: receives
  are zeros, sends dropped) against its FLOP share of the dense onnxruntime time;
* the onnx engine's speed-up against dense onnxruntime on one device.

Prints the ratios the issue targets (<= 0.5 of a dense process on the same engine,
<= 300 MiB for a ResNet-50 rank, compute alone <= 1.2x its FLOP share, speed-up >= 2.5x);
asserts nothing. Every process is a fresh one, so no measurement inherits another's memory.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.export.engines import ONNX_ENTRY
from disco_zoo.export.onnx_node import OPSET, export_onnx
from disco_zoo.hub import load, resolve_folder
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.session import seeded_input
from disco_zoo.store import load_folder_config

MIB = 2**20

# run in fresh interpreters: the dense baselines and the onnx ranks' compute alone
DENSE_TORCH = r"""
import json, resource, sys, time
from pathlib import Path
def rss(): return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"): return int(line.split()[1]) * 1024
import torch, timm, disco_zoo.api
torch.set_num_threads(1)
libs = rss()
model = disco_zoo.api.create_model(sys.argv[1], pretrained=True).eval()
loaded = rss()
x = torch.from_numpy(__import__("numpy").load(sys.argv[2]))
times = []
with torch.inference_mode():
    for i in range(2 + int(sys.argv[3])):
        t0 = time.perf_counter(); model(x); times.append(time.perf_counter() - t0)
print(json.dumps({"libs": libs, "loaded": loaded, "peak": hwm(),
                  "times": times[2:], "torch_imported": True}))
"""

DENSE_ORT = r"""
import json, resource, sys, time
from pathlib import Path
def rss(): return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"): return int(line.split()[1]) * 1024
import numpy as np, onnxruntime as ort
libs = rss()
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
loaded = rss()
x = np.load(sys.argv[2]); name = session.get_inputs()[0].name
times = []
for i in range(2 + int(sys.argv[3])):
    t0 = time.perf_counter(); session.run(None, {name: x}); times.append(time.perf_counter() - t0)
print(json.dumps({"libs": libs, "loaded": loaded, "peak": hwm(),
                  "times": times[2:], "torch_imported": "torch" in sys.modules}))
"""

SOLO_ORT = r"""
import json, sys, time
import numpy as np
from disco_zoo.edge.program import load_program
from disco_zoo.edge.runner import NodeRunner
class _NoWire:
    '''Exchanges taken out: a receive is zeros of its shape, a send goes nowhere.'''
    def __init__(self, rank, world): self.rank, self.world_size = rank, world
    def irecv(self, shape, dtype, src, tag):
        zeros = np.zeros(shape, dtype)
        return type("R", (), {"wait": lambda self: zeros})()
    def isend(self, array, dst, tag): return type("S", (), {"wait": lambda self: None})()
rank, world = int(sys.argv[2]), int(sys.argv[3])
runner = NodeRunner(load_program(sys.argv[1], rank, world), _NoWire(rank, world), threads=1)
x = np.load(sys.argv[4]) if runner.program["image"] else None
times = []
for i in range(2 + int(sys.argv[5])):
    t0 = time.perf_counter(); runner(x); times.append(time.perf_counter() - t0)
print(json.dumps({"times": times[2:], "torch_imported": "torch" in sys.modules}))
"""


def _python(code: str, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"a measurement process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50_disco_2node.digits", help="a published DISCO model")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    ns = parser.parse_args()

    folder = resolve_folder(ns.model)
    config = load_folder_config(folder)
    shape = [1, config.input_size[0], ns.input_size, ns.input_size]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        x_path = tmp / "x.npy"
        x = seeded_input(shape, 0)
        np.save(x_path, x.numpy())
        export_onnx(folder, tmp / "onnx", shape)
        dense = load(config.dense).eval()
        with torch.no_grad():
            torch.onnx.export(dense, (x,), str(tmp / "dense.onnx"), dynamo=False, opset_version=OPSET)
        acc = disco_accounting(load(ns.model), tuple(shape))

        common = {"input_shape": shape, "input_path": str(x_path), "warmup": 2, "repeats": ns.repeats}
        onnx_ranks = launch([ONNX_ENTRY] * config.nodes, config.nodes, "mpi", timeout_s=300,
                            args={**common, "program": str(tmp / "onnx")})
        torch_ranks = launch("disco_zoo.runtime.disco_executor:run_disco", config.nodes, "mpi", timeout_s=300,
                             args={**common, "folder": str(folder)})
        dense_torch = _python(DENSE_TORCH, config.dense, str(x_path), str(ns.repeats))
        dense_ort = _python(DENSE_ORT, str(tmp / "dense.onnx"), str(x_path), str(ns.repeats))
        solo = [_python(SOLO_ORT, str(tmp / "onnx"), str(k), str(config.nodes), str(x_path), str(ns.repeats))
                for k in range(config.nodes)]

    dense_ort_ms = _median_ms(dense_ort["times"])
    share = [f / acc.flops_dense for f in acc.flops_per_node]
    onnx_ms = max(_median_ms(r["times_s"]) for r in onnx_ranks)
    torch_ms = max(_median_ms(r["times_s"]) for r in torch_ranks)
    result = {
        "model": ns.model, "input_shape": shape, "repeats": ns.repeats, "threads_per_process": 1,
        "memory_mib": {
            "onnx_rank": [{"peak": r["peak_rss_bytes"] / MIB, "libs": r["rss_start_bytes"] / MIB,
                           "weights": r["rss_load_growth_bytes"] / MIB, "weight_bytes": r["weight_bytes"] / MIB,
                           "activations": (r["peak_rss_bytes"] - r["rss_loaded_bytes"]) / MIB,
                           "torch_imported": r["torch_imported"]} for r in onnx_ranks],
            "torch_rank": [{"peak": r["maxrss_kb"] / 1024, "weights": r["rss_load_growth_bytes"] / MIB,
                            "libs_and_activations": r["maxrss_kb"] / 1024 - r["rss_load_growth_bytes"] / MIB}
                           for r in torch_ranks],
            "dense_torch": {"peak": dense_torch["peak"] / MIB, "libs": dense_torch["libs"] / MIB,
                            "weights": (dense_torch["loaded"] - dense_torch["libs"]) / MIB,
                            "activations": (dense_torch["peak"] - dense_torch["loaded"]) / MIB},
            "dense_onnxruntime": {"peak": dense_ort["peak"] / MIB, "libs": dense_ort["libs"] / MIB,
                                  "weights": (dense_ort["loaded"] - dense_ort["libs"]) / MIB,
                                  "activations": (dense_ort["peak"] - dense_ort["loaded"]) / MIB},
        },
        "latency_ms": {"onnx_engine": onnx_ms, "torch_engine": torch_ms, "dense_onnxruntime": dense_ort_ms,
                       "dense_torch": _median_ms(dense_torch["times"]),
                       "onnx_rank_compute_alone": [_median_ms(s["times"]) for s in solo]},
        "flop_share": share,
    }
    peak_onnx = max(r["peak"] for r in result["memory_mib"]["onnx_rank"])
    peak_torch = max(r["peak"] for r in result["memory_mib"]["torch_rank"])
    result["ratios"] = {
        "onnx_rank_vs_torch_rank_rss": peak_onnx / peak_torch,
        "onnx_rank_vs_dense_torch_rss": peak_onnx / result["memory_mib"]["dense_torch"]["peak"],
        "onnx_rank_vs_dense_onnxruntime_rss": peak_onnx / result["memory_mib"]["dense_onnxruntime"]["peak"],
        "torch_rank_vs_dense_torch_rss": peak_torch / result["memory_mib"]["dense_torch"]["peak"],
        "onnx_engine_vs_torch_engine_latency": onnx_ms / torch_ms,
        "onnx_compute_alone_vs_flop_share": [c / (s * dense_ort_ms) for c, s in
                                             zip(result["latency_ms"]["onnx_rank_compute_alone"], share)],
        "onnx_speedup_vs_dense_onnxruntime": dense_ort_ms / onnx_ms,
    }
    if ns.out:
        ns.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
