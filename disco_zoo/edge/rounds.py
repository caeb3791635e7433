"""Interleaved timing rounds of the onnx engine, as :mod:`disco_zoo.runtime.rounds` does for torch.

Why: a small VM's speed drifts by tens of percent within seconds, so the ratios the
benchmark reports (speed-up against the dense model, compute alone against a FLOP share)
are taken within each round and their median reported. Each round, back to back in the
same processes (the order rotating from round to round): ``dense``, the dense ONNX model
on rank 0 while the others wait; ``solo``, each rank's program alone with the exchanges
taken out (receives are zeros, sends dropped), one rank at a time; ``real``, one
distributed inference.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from disco_zoo.edge.program import load_program
from disco_zoo.edge.runner import NodeRunner, load_image, make_transport, session_options

__all__ = ["time_rounds", "make_transport"]  # make_transport: this entry runs without torch too


class _Done:
    def __init__(self, value: Any = None) -> None:
        self._value = value

    def wait(self) -> Any:
        return self._value


class _NoWire:
    """The exchanges taken out: a receive is zeros of its shape, a send goes nowhere."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def irecv(self, shape: list[int], dtype: Any, src: int, tag: str) -> _Done:
        return _Done(np.zeros(shape, dtype))

    def isend(self, array: np.ndarray, dst: int, tag: str) -> _Done:
        return _Done()


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_rounds(t: Any, program: str, input_path: str | None = None, rounds: int = 11, warmup: int = 2,
                dense_onnx: str | None = None, seed: int = 0, threads: int = 1, **_ignored: Any) -> dict[str, Any]:
    """Launch entry: per rank, seconds per measured round (``real_s``, ``solo_s``, on rank 0 ``dense_s``)."""
    import onnxruntime as ort

    node = load_program(program, t.rank, t.world_size)
    real, solo = NodeRunner(node, t, threads), NodeRunner(node, _NoWire(t.rank, t.world_size), threads)
    x = load_image(node.program, input_path, seed)
    dense = None
    if dense_onnx and t.rank == 0:
        dense = ort.InferenceSession(dense_onnx, session_options(ort, threads), providers=["CPUExecutionProvider"])
        feed = {dense.get_inputs()[0].name: x}
    out: dict[str, list[float]] = {"real_s": [], "solo_s": [], "dense_s": []}

    def dense_phase(keep: bool) -> None:
        t.barrier()
        if dense is not None:
            elapsed = _timed(lambda: dense.run(None, feed))
            if keep:
                out["dense_s"].append(elapsed)

    def solo_phase(keep: bool) -> None:
        for r in range(t.world_size):
            t.barrier()
            if r == t.rank:
                elapsed = _timed(lambda: solo(x))
                if keep:
                    out["solo_s"].append(elapsed)

    def real_phase(keep: bool) -> None:
        t.barrier()
        elapsed = _timed(lambda: real(x))
        if keep:
            out["real_s"].append(elapsed)

    phases = [*([dense_phase] if dense_onnx else []), solo_phase, real_phase]
    for i in range(warmup + rounds):
        for phase in phases[i % len(phases):] + phases[:i % len(phases)]:
            phase(i >= warmup)
    t.barrier()
    return {"rank": t.rank, **out}
