"""Nodes without PyTorch: memory and speed of an onnx-engine rank against torch and dense.

    .venv/bin/python bench/bench_edge_memory.py [--model resnet50_disco_2node.digits]
        [--input-size 224] [--repeats 11] [--out FILE.json]

For the published 2-node DISCO model at 224x224, batch 1, one thread per process, MPI
on localhost, it measures in one run:

* peak RSS (VmHWM; a torch rank's maxrss) of an onnx-engine rank, a torch-engine rank, one
  dense torch process and one dense onnxruntime process, with a breakdown: interpreter
  plus libraries (RSS once imported), weights (RSS growth while loading), activations
  (peak less the loaded RSS; load transients included);
* in interleaved rounds (:mod:`disco_zoo.edge.rounds`, :mod:`disco_zoo.runtime.rounds`;
  ratios are medians of per-round ratios): the onnx engine's speed-up against dense
  onnxruntime on one device, the torch engine's against dense torch, each onnx rank's
  compute alone (exchanges taken out) against its FLOP share of the dense onnxruntime
  time, and the onnx engine's latency against the torch engine's (two launches: a ratio
  of medians), one thread per process.

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
from disco_zoo.runtime.rounds import ROUNDS_ENTRY
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
from disco_zoo.edge.runner import session_options  # the onnx ranks' own settings
libs = rss()
session = ort.InferenceSession(sys.argv[1], session_options(ort, 1), providers=["CPUExecutionProvider"])
loaded = rss()
x = np.load(sys.argv[2]); name = session.get_inputs()[0].name
times = []
for i in range(2 + int(sys.argv[3])):
    t0 = time.perf_counter(); session.run(None, {name: x}); times.append(time.perf_counter() - t0)
print(json.dumps({"libs": libs, "loaded": loaded, "peak": hwm(),
                  "times": times[2:], "torch_imported": "torch" in sys.modules}))
"""

def _python(code: str, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"a measurement process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def _round_ratios(onnx_rounds: list[dict], torch_rounds: list[dict], share: list[float]) -> dict:
    """Medians of per-round ratios (a round's real time is its slowest rank's)."""
    med = statistics.median
    onnx_real = [max(r["real_s"][i] for r in onnx_rounds) for i in range(len(onnx_rounds[0]["real_s"]))]
    torch_real = [max(r["real_s"][i] for r in torch_rounds) for i in range(len(torch_rounds[0]["real_s"]))]
    onnx_dense, torch_dense = onnx_rounds[0]["dense_s"], torch_rounds[0]["dense_s"]
    return {
        "onnx_speedup": med(d / r for d, r in zip(onnx_dense, onnx_real)),
        "torch_speedup": med(d / r for d, r in zip(torch_dense, torch_real)),
        "solo_vs_share": [med(s / (f * d) for s, d in zip(r["solo_s"], onnx_dense)) for r, f in zip(onnx_rounds, share)],
        # the two engines' rounds run in two launches, one after the other: a ratio of medians
        "onnx_vs_torch_real": med(onnx_real) / med(torch_real),
        "medians_ms": {"onnx_real": med(onnx_real) * 1e3, "onnx_dense": med(onnx_dense) * 1e3,
                       "onnx_solo": [med(r["solo_s"]) * 1e3 for r in onnx_rounds],
                       "torch_real": med(torch_real) * 1e3, "torch_dense": med(torch_dense) * 1e3},
    }


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
        onnx_rounds = launch("disco_zoo.edge.rounds:time_rounds", config.nodes, "mpi", timeout_s=300,
                             args={"program": str(tmp / "onnx"), "input_path": str(x_path), "rounds": ns.repeats,
                                   "dense_onnx": str(tmp / "dense.onnx")})
        torch_rounds = launch(ROUNDS_ENTRY, config.nodes, "mpi", timeout_s=300,
                              args={"folder": str(folder), "input_shape": shape, "rounds": ns.repeats,
                                    "dense": config.dense, "solo": False})

    share = [f / acc.flops_dense for f in acc.flops_per_node]
    per_round = _round_ratios(onnx_rounds, torch_rounds, share)
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
        "latency_ms": {"onnx_engine": onnx_ms, "torch_engine": torch_ms,
                       "dense_onnxruntime": _median_ms(dense_ort["times"]), "dense_torch": _median_ms(dense_torch["times"]),
                       "rounds": per_round["medians_ms"]},
        "flop_share": share,
    }
    peak_onnx = max(r["peak"] for r in result["memory_mib"]["onnx_rank"])
    peak_torch = max(r["peak"] for r in result["memory_mib"]["torch_rank"])
    result["ratios"] = {
        "onnx_rank_vs_torch_rank_rss": peak_onnx / peak_torch,
        "onnx_rank_vs_dense_torch_rss": peak_onnx / result["memory_mib"]["dense_torch"]["peak"],
        "onnx_rank_vs_dense_onnxruntime_rss": peak_onnx / result["memory_mib"]["dense_onnxruntime"]["peak"],
        "torch_rank_vs_dense_torch_rss": peak_torch / result["memory_mib"]["dense_torch"]["peak"],
        "onnx_engine_vs_torch_engine_latency": per_round["onnx_vs_torch_real"],
        "onnx_compute_alone_vs_flop_share": per_round["solo_vs_share"],
        "onnx_speedup_vs_dense_onnxruntime": per_round["onnx_speedup"],
        "torch_speedup_vs_dense_torch": per_round["torch_speedup"],
    }
    if ns.out:
        ns.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
