"""The backend with no wire, beside MPI and gloo: what a rank computes, alone.

Sends complete at once and receives are noise, so a rank's inference through the real
runtime code (:class:`~disco_zoo.runtime.transport.Transport`, the executors' layers)
runs with nothing to wait for. Each call is logged with a timestamp, so
:mod:`disco_zoo.runtime.profiling` can turn a run into the rank's program (compute gaps
and messages) that :mod:`disco_zoo.timing` replays over links.
"""
from __future__ import annotations

import time

import torch

__all__ = ["NullBackend", "noise"]

_NOISE: dict[torch.dtype, torch.Tensor] = {}  # per dtype, standard normal values, grown as needed


def noise(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """``numel`` standard normal values of ``dtype``, made once per process and reused,
    so that filling a buffer costs one copy (the first, untimed run makes them)."""
    pool = _NOISE.get(dtype)
    if pool is None or pool.numel() < numel:
        pool = _NOISE[dtype] = torch.randn(max(numel, 1 << 16), generator=torch.Generator().manual_seed(0)).to(dtype)
    return pool[:numel]


class _Request:
    def __init__(self, kind: str, peer: int, tag: int, nbytes: int = 0) -> None:
        self.kind, self.peer, self.tag, self.nbytes = kind, peer, tag, nbytes


class NullBackend:
    """A backend with no wire: sends complete at once, receives are noise. It logs each
    call with a timestamp so the compute between them can be measured.

    Why noise, not zeros: the same conv costs ~3% less time on constant data than on real
    data here (measured on ResNet-50, image vs zeros, one thread), and a rank that
    receives its input image would compute the whole model on constants."""

    name = "null"

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.log: list[tuple[str, int, int, int, float]] = []  # (kind, peer, tag, nbytes, time)

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> _Request:
        self.log.append(("send", dst, tag, buf.numel() * buf.element_size(), time.perf_counter()))
        return _Request("send_done", dst, tag)

    def post_recv(self, buf: torch.Tensor, src: int, tag: int) -> _Request:
        if buf.is_floating_point():
            buf.copy_(noise(buf.numel(), buf.dtype).view(buf.shape))
        else:
            buf.zero_()
        return _Request("recv", src, tag)

    def wait(self, request: _Request | None, deadline: float) -> bool:
        if request is not None:
            self.log.append((request.kind, request.peer, request.tag, 0, time.perf_counter()))
        return True

    def post_barrier(self) -> None:
        return None

    def close(self) -> None:
        pass
