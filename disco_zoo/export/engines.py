"""Per-rank launch entries for runs whose ranks use different engines.

The launcher gives every rank the same arguments; a torch rank ignores the onnx rank's
``program`` (and the onnx rank, :func:`disco_zoo.edge.runner.run_program`, ignores the
torch rank's shard ``folder``), so ``launch([TORCH_ENTRY, ONNX_ENTRY], 2, args=...)``
runs rank 0 on torch and rank 1 on onnxruntime.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TORCH_ENTRY", "ONNX_ENTRY", "ENGINES", "run_torch_node", "rank_entries", "parse_engines",
           "check_root_engine"]

TORCH_ENTRY = "disco_zoo.export.engines:run_torch_node"
ONNX_ENTRY = "disco_zoo.edge.runner:run_program"
ENGINES = {"torch": TORCH_ENTRY, "onnx": ONNX_ENTRY}


def run_torch_node(t: Any, program: str | None = None, **args: Any) -> dict[str, Any]:
    """The torch executor's entry, taking (and ignoring) the onnx ranks' arguments."""
    from disco_zoo.runtime.disco_executor import run_disco

    report = run_disco(t, **args)
    report["engine"] = "torch"
    return report


def rank_entries(engines: list[str]) -> list[str]:
    """The launch entry of each rank, from its engine name ('torch' or 'onnx')."""
    from disco_zoo.errors import DiscoZooError

    bad = [e for e in engines if e not in ENGINES]
    if bad:
        raise DiscoZooError(f"unknown engine {bad[0]!r}: use one of {', '.join(ENGINES)} (one per rank, comma-separated)")
    return [ENGINES[e] for e in engines]


def parse_engines(engine: str, world: int, option: str = "--engine") -> list[str]:
    """One engine per rank from 'torch', 'onnx' or a comma-separated list of them."""
    from disco_zoo.errors import DiscoZooError

    engines = [e.strip() for e in engine.split(",")]
    if len(engines) == 1:
        engines = engines * world
    if len(engines) != world or any(e not in ENGINES for e in engines):
        raise DiscoZooError(f"{option} {engine!r}: give torch, onnx, or one of them per rank ({world} ranks), "
                            "comma-separated, e.g. torch,onnx")
    return engines


def check_root_engine(engines: list[str], program_root: str | Path) -> None:
    """Refuse an onnx rank 0 for a model with stages (a detector), before any rank starts.

    Why: its export is the split core only; the pre-processing, box decoding and NMS are
    torchvision code that runs on rank 0 and needs torch. An onnx rank 0 would report the
    heads' raw outputs where ``run`` and ``eval`` expect detections."""
    import json

    from disco_zoo.errors import DiscoZooError

    if engines[0] != "onnx":
        return
    program = json.loads((Path(program_root) / "node0" / "program.json").read_text())
    if program.get("stages"):
        raise DiscoZooError(f"{program['model']} pre- and post-processes on rank 0 with torchvision (its onnx export is the split "
                            f"core only): run rank 0 on torch, e.g. --engine torch,{','.join(['onnx'] * (len(engines) - 1))}")
