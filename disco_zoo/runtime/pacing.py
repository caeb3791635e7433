"""Emulate slower devices under the real DISCO executor: stretch each compute gap.

Why here, between the executor and the transport: a DISCO plan predicts each node's
program on its device (:mod:`disco_zoo.planner.disco_programs`: compute gaps between
communication events, in the executor's own order). :class:`PacedTransport` wraps a
rank's :class:`~disco_zoo.runtime.transport.Transport` and, before each event (posting a
send, the first wait on a receive or a send), sleeps until the compute since the previous
event has lasted as long as the device's gap. The executor's code, the bytes and the link
emulation are untouched; only compute is stretched, as the EdgeFlow executor stretches
its units. A host slower than an emulated device cannot be sped up: the planner passes a
``slowdown`` so that every device is slower than this host.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.transport import Transport
from disco_zoo.runtime.wire import wait_until

__all__ = ["PacedTransport", "run_disco_paced"]


class _PacedHandle:
    def __init__(self, handle: Any, pacer: "PacedTransport") -> None:
        self._handle, self._pacer, self._waited = handle, pacer, False

    def wait(self) -> Any:
        if not self._waited:
            self._waited = True
            self._pacer.pace()
        result = self._handle.wait()
        self._pacer.mark()
        return result


class PacedTransport:
    """A transport whose compute gaps last at least ``gaps[i]`` seconds each (see module doc)."""

    def __init__(self, inner: Transport, gaps: Sequence[float]) -> None:
        self._inner, self._gaps = inner, list(gaps)
        self._index, self._mark = 0, time.monotonic()
        self.slept_s = self.overrun_s = 0.0

    def __getattr__(self, name: str) -> Any:  # rank, world_size, counter, barrier, ...
        return getattr(self._inner, name)

    def start(self) -> None:
        """Begin an inference: the program's first gap counts from now."""
        self._index, self._mark, self.slept_s, self.overrun_s = 0, time.monotonic(), 0.0, 0.0

    @property
    def events(self) -> int:
        return self._index

    def mark(self) -> None:
        self._mark = time.monotonic()

    def finish(self, tail_s: float) -> None:
        """End an inference: the compute after the last event lasts at least ``tail_s``."""
        self._wait(self._mark + tail_s)

    def pace(self) -> None:
        if self._index >= len(self._gaps):
            raise DiscoZooError(f"rank {self._inner.rank} communicates more often than its plan says "
                                f"({len(self._gaps)} events); the plan was made for another partition")
        self._wait(self._mark + self._gaps[self._index])
        self._index += 1

    def _wait(self, until: float) -> None:
        # wire.wait_until, not time.sleep: a sleep in a VM wakes 50-100 us late, and a
        # ResNet-50 rank paces ~100 events, so plain sleeps ran 20-40% over the plan
        rest = until - time.monotonic()
        if rest > 0:
            wait_until(until)
            self.slept_s += rest
        else:  # this host was slower than the device here: the run cannot match the plan
            self.overrun_s -= rest

    def isend(self, tensor: torch.Tensor, dst: int, tag: str) -> _PacedHandle:
        self.pace()
        handle = self._inner.isend(tensor, dst, tag)
        self.mark()
        return _PacedHandle(handle, self)

    def send(self, tensor: torch.Tensor, dst: int, tag: str) -> None:
        self.isend(tensor, dst, tag).wait()

    def irecv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> _PacedHandle:
        return _PacedHandle(self._inner.irecv(shape, dtype, src, tag), self)

    def recv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> torch.Tensor:
        return self.irecv(shape, dtype, src, tag).wait()


def run_disco_paced(t: Transport, folder: str, input_shape: list[int], gaps: list[list[float]],
                    tails: list[float], repeats: int = 3, warmup: int = 1, seed: int = 0) -> dict[str, Any]:
    """Launch entry: the DISCO model in ``folder`` with rank k's compute stretched to
    ``gaps[k]`` (and ``tails[k]`` after its last event); per-inference wall times."""
    from disco_zoo.runtime.disco_executor import build_node_model, inference_fn, output_rank
    from disco_zoo.runtime.session import load_input, rank_report

    paced = PacedTransport(t, gaps[t.rank])
    model, part = build_node_model(folder, paced)  # type: ignore[arg-type]  # quacks like a Transport
    x = load_input(None, input_shape, seed) if t.rank == 0 else None
    forward = inference_fn(paced, model, part, input_shape, x)  # type: ignore[arg-type]
    times, slept, overrun = [], [], []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t.barrier()
            t.counter.reset()
            start = time.perf_counter()
            paced.start()
            out = forward()
            if paced.events != len(gaps[t.rank]):
                raise DiscoZooError(f"rank {t.rank} made {paced.events} of the {len(gaps[t.rank])} exchanges its "
                                    "plan says; the plan was made for another partition")
            paced.finish(tails[t.rank])
            if i >= warmup:
                times.append(time.perf_counter() - start)
                slept.append(paced.slept_s)
                overrun.append(paced.overrun_s)
    t.barrier()
    return rank_report(t, output_rank(part), out, times_s=times, slept_s=slept, overrun_s=overrun)
