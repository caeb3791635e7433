"""Each rank's compute alone, as a program the model of time replays.

Why: a latency measured over an emulated or shaped link should be *predictable* from
two things we know separately, each rank's compute and the bytes the accounting says
move. :func:`run_without_wire` runs a rank's part of the model against a
:class:`~disco_zoo.runtime.null_backend.NullBackend` (sends vanish, receives return
noise at once) and records the rank's program: the compute time between its
communication calls, and every message it posts (peer, tag, bytes on the wire) and waits
for. The runtime code is the real one (``build_node_model``, ``scatter_input``,
:class:`Transport`); only the wire is missing, so the trace is "compute alone". Inside
a launch (:mod:`disco_zoo.runtime.rounds`) every rank does this at once, between real
inferences, so the profile shares the real run's machine and moment;
:func:`profile_compute` does it one rank after another in this process.
:func:`disco_zoo.timing.predict_latency` then replays the programs over links.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from disco_zoo.runtime.disco_executor import build_node_model, inference_fn
from disco_zoo.runtime.null_backend import NullBackend
from disco_zoo.runtime.session import seeded_input
from disco_zoo.runtime.transport import Transport
from disco_zoo.store import load_folder_config
from disco_zoo.timing.replay import ComputeProfile, Event, RankProgram, median_program

__all__ = ["run_without_wire", "profile_compute"]


def _program(rank: int, log: list[tuple[str, int, int, int, float]], start: float, end: float) -> RankProgram:
    program, last = RankProgram(rank), start
    for kind, peer, tag, nbytes, at in log:
        program.events.append(Event(kind, peer, tag, at - last, nbytes))
        last = at
    program.tail_s = end - last
    return program


def run_without_wire(transport: Transport, forward: Callable[[], Any]) -> RankProgram:
    """Run ``forward`` (this rank's inference through ``transport``) with no wire under
    it: a NullBackend and no link emulation for the duration, restored afterwards. The
    result is the rank's program, i.e. its compute alone. Inside a launch every rank can
    do this at the same time as the others, so the profile sees the same contention for
    cores and memory as the real run next to it."""
    null = NullBackend(transport.rank, transport.world_size)
    with transport.over(null):
        start = time.perf_counter()
        forward()
        end = time.perf_counter()
    return _program(transport.rank, list(null.log), start, end)


def profile_compute(
    folder: Path | str,
    input_shape: list[int] | tuple[int, ...],
    repeats: int = 3,
    warmup: int = 1,
    wire_dtype: str = "fp32",
    threads: int = 1,
    seed: int = 0,
) -> ComputeProfile:
    """Measure every rank's program for the DISCO model in ``folder``, one rank after
    another in this process (see module doc)."""
    nodes = load_folder_config(folder).nodes
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    programs = []
    try:
        for k in range(nodes):
            transport = Transport(NullBackend(k, nodes), wire_dtype=wire_dtype)
            model, part = build_node_model(folder, transport)
            x = seeded_input(list(input_shape), seed) if k == 0 else None
            forward = inference_fn(transport, model, part, list(input_shape), x)
            with torch.inference_mode():
                runs = [run_without_wire(transport, forward) for _ in range(warmup + repeats)][warmup:]
            programs.append(median_program(runs))
            del model
    finally:
        torch.set_num_threads(saved)
    return ComputeProfile(programs)
