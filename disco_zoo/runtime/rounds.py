"""Interleaved timing rounds inside one launch: what every latency ratio we report is made of.

(Named *rounds*, not timing, so it is not confused with :mod:`disco_zoo.timing`, the
model of time these measurements are compared with.)

Why: this kind of machine (a small VM) changes speed by tens of percent from one second
to the next, so a ratio of two numbers measured minutes (or even seconds) apart says
more about the machine than about the runtime. Here every round measures, back to back
and with the same processes and weights (the order rotates from round to round):

1. ``dense`` (optional): the dense model on rank 0, one thread, while the other ranks
   wait at a barrier: the single-process baseline;
2. ``solo`` (optional): each rank's compute alone, one rank at a time while the others
   wait: the rank's inference with no wire under it
   (:func:`~disco_zoo.runtime.profiling.run_without_wire`);
3. ``concurrent``: every rank's compute alone at the same time, as in the real run, so
   it includes the contention for cores and memory that ranks sharing a machine cause;
   its program (compute gaps and messages) feeds the model of time;
4. ``real``: one distributed inference through the transport (and the emulated links).

A ratio is taken within each round and the median over rounds is reported.
"""
from __future__ import annotations

import resource
import time
from typing import Any

import torch

from disco_zoo.graph.stages import set_input_shape
from disco_zoo.registry import build_model, split_name
from disco_zoo.runtime.disco_executor import inference_fn, load_node
from disco_zoo.runtime.profiling import run_without_wire
from disco_zoo.runtime.session import seeded_input
from disco_zoo.runtime.transport import Transport

__all__ = ["time_rounds", "build_dense", "ROUNDS_ENTRY"]

ROUNDS_ENTRY = "disco_zoo.runtime.rounds:time_rounds"


def build_dense(name: str) -> torch.nn.Module:
    """The dense baseline: ``arch.tag`` (or a model folder's path) loads its weights, a
    bare arch is random (latency does not depend on the weights' values)."""
    from disco_zoo.hub import is_model_path, load

    if is_model_path(name) or split_name(name)[1]:
        return load(name).eval()
    return build_model(name).eval()


def _timed(forward) -> float:
    start = time.perf_counter()
    forward()
    return time.perf_counter() - start


def time_rounds(
    t: Transport,
    folder: str,
    input_shape: list[int],
    rounds: int = 5,
    warmup: int = 2,
    dense: str | None = None,
    solo: bool = True,
    seed: int = 0,
    verify: bool = True,
) -> dict[str, Any]:
    """Launch entry: ``warmup`` + ``rounds`` rounds (see module doc); per rank, lists of
    seconds per measured round (``real_s``, ``solo_s``, ``concurrent_s``, on rank 0
    ``dense_s``), the concurrent runs' programs, one inference's bytes and the shard's
    loading cost (measured before the dense model, if any, is built)."""
    model, part, stats = load_node(t, folder, verify)
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = seeded_input(input_shape, seed) if t.rank == 0 else None
    forward = inference_fn(t, model, part, input_shape, x)
    dense_model = build_dense(dense) if dense and t.rank == 0 else None  # fed the same image x
    if dense_model is not None:
        set_input_shape(dense_model, input_shape)  # timed at the size DISCO runs at, as inference_fn sets it
    out: dict[str, Any] = {"real_s": [], "solo_s": [], "concurrent_s": [], "programs": [], "dense_s": []}

    def dense_phase(keep: bool) -> None:
        t.barrier()
        if dense_model is not None:
            elapsed = _timed(lambda: dense_model(x))
            if keep:
                out["dense_s"].append(elapsed)

    def solo_phase(keep: bool) -> None:
        for r in range(t.world_size):
            t.barrier()
            if r == t.rank:
                program = run_without_wire(t, forward)
                if keep:
                    out["solo_s"].append(program.compute_s)

    def concurrent_phase(keep: bool) -> None:
        t.barrier()
        program = run_without_wire(t, forward)
        if keep:
            out["concurrent_s"].append(program.compute_s)
            out["programs"].append(program.to_dict())

    def real_phase(keep: bool) -> None:
        t.barrier()
        t.counter.reset()  # count one inference
        elapsed = _timed(forward)
        out["bytes"] = t.counter.to_dict()  # before a profiled run (which counts too) can add to it
        if keep:
            out["real_s"].append(elapsed)

    phases = [*([dense_phase] if dense else []), *([solo_phase] if solo else []), concurrent_phase, real_phase]
    with torch.inference_mode():
        run_without_wire(t, forward)  # untimed: first-call set-up (kernels, allocator) even when warmup=0
        if dense_model is not None:
            dense_model(x)
        for i in range(warmup + rounds):
            # the phase order rotates from round to round, so no measurement always runs
            # right after the same one (e.g. with its weights evicted from the cache by the
            # dense model's): every ratio sees every position
            for phase in phases[i % len(phases):] + phases[:i % len(phases)]:
                phase(i >= warmup)
    t.barrier()
    if dense_model is not None:
        out["dense_weight_bytes"] = sum(p.numel() * p.element_size() for p in [*dense_model.parameters(),
                                                                             *dense_model.buffers()])
    return {"rank": t.rank, **stats, **out, "maxrss_kb": maxrss_kb}
