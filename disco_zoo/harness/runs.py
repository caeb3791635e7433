"""The harness's launches of the runtime's own entries (N real processes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from disco_zoo.harness.options import EvalOptions
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.rounds import ROUNDS_ENTRY
from disco_zoo.runtime.session import RunResult, run_entry
from disco_zoo.timing.links import Link

__all__ = ["DISCO_ENTRY", "run_inference", "run_rounds"]

DISCO_ENTRY = "disco_zoo.runtime.disco_executor:run_disco"


def run_inference(folder: Path, nodes: int, shape: list[int], opts: EvalOptions,
                  input_path: str | None = None) -> RunResult:
    """One distributed inference of ``shape`` (the ``.npy`` at ``input_path``, else the
    runtime's seeded input): every rank's counters merged, the output rank's output.
    With ``opts.engine`` other than torch, the onnx ranks run the model exported for ``shape``."""
    args = {"folder": str(folder), "input_shape": shape, "input_path": input_path}
    if opts.engine == "torch":
        return run_entry(DISCO_ENTRY, nodes, opts.backend, args=args, timeout_s=opts.timeout_s)
    import numpy as np

    from disco_zoo.export.engines import check_root_engine, parse_engines, rank_entries
    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.runtime.lifetime import temporary_directory
    from disco_zoo.runtime.session import seeded_input

    engines = parse_engines(opts.engine, nodes)
    entries = rank_entries(engines)
    with temporary_directory(prefix="disco-zoo-onnx-") as tmp:
        export_onnx(folder, tmp / "onnx", shape)
        check_root_engine(engines, tmp / "onnx")
        if input_path is None:  # the torch engine's seeded input, for the onnx ranks too
            np.save(tmp / "input.npy", seeded_input(shape, 0).numpy())
            args["input_path"] = str(tmp / "input.npy")
        return run_entry(entries, nodes, opts.backend, args={**args, "program": str(tmp / "onnx")},
                         timeout_s=opts.timeout_s)


def run_rounds(folder: Path, nodes: int, shape: list[int], opts: EvalOptions, rounds: int, warmup: int,
               link: Link | None = None, dense: str | None = None, solo: bool = False) -> list[dict[str, Any]]:
    """Interleaved timing rounds (:mod:`disco_zoo.runtime.rounds`): every rank's report."""
    args = {"folder": str(folder), "input_shape": shape, "rounds": rounds, "warmup": warmup, "dense": dense, "solo": solo}
    return launch(ROUNDS_ENTRY, world_size=nodes, backend=opts.backend, args=args, timeout_s=opts.timeout_s, link=link)
