"""What one message costs in software, measured with ping-pongs through the Transport.

Why its own module: the model of time charges every message a
:class:`~disco_zoo.timing.replay.MessageCost` (arrival delay and the sender's own time);
measuring it is part of the runtime, not of its self-tests. :func:`pingpong` is the
launch entry, :func:`measure_message_cost` runs it over an emulated link at 1 KB and
1 MiB and fits a fixed part and a per-byte part to each cost.
"""
from __future__ import annotations

import statistics
import time

import torch

from disco_zoo.runtime.transport import Transport
from disco_zoo.timing.links import Link
from disco_zoo.timing.replay import MessageCost

__all__ = ["pingpong", "measure_message_cost", "PINGPONG_ENTRY", "SMALL_MESSAGE", "LARGE_MESSAGE",
           "CALIBRATION_LATENCY_S"]

PINGPONG_ENTRY = "disco_zoo.runtime.calibrate:pingpong"
SMALL_MESSAGE, LARGE_MESSAGE = 1024, 1 << 20
CALIBRATION_LATENCY_S = 1e-3  # the emulated link the ping-pongs use (unlimited bandwidth)
CALIBRATION_BANDWIDTH_BPS = 1e15  # "unlimited", but still an emulated (stamped, held) link


def pingpong(t: Transport, nbytes: int = 1024, iters: int = 50, warmup: int = 5) -> dict:
    """Launch entry: round trips between ranks 0 and 1 through the Transport; one-way =
    round trip / 2. ``send_call_s``: how long rank 0's isend call itself takes (the
    sender's own time)."""
    data = torch.zeros(max(nbytes // 4, 1), dtype=torch.float32)
    one_way, send_call = [], []
    t.barrier()
    for i in range(warmup + iters):
        start = time.perf_counter()
        if t.rank == 0:
            handle = t.isend(data, 1, "ping")
            send_call.append(time.perf_counter() - start)
            handle.wait()
            t.recv(data.shape, data.dtype, 1, "pong")
        elif t.rank == 1:
            t.send(t.recv(data.shape, data.dtype, 0, "ping"), 0, "pong")
        if i >= warmup:
            one_way.append((time.perf_counter() - start) / 2)
    return {"rank": t.rank, "median_s": statistics.median(one_way), "min_s": min(one_way),
            "send_call_s": statistics.median(send_call[warmup:]) if send_call else 0.0}


def _pingpong(backend: str, nbytes: int, emulated: bool, iters: int) -> tuple[float, float]:
    """Median one-way seconds of an ``nbytes`` ping-pong, less the emulated link's
    latency, and the median time the sender's isend call takes.

    Emulated, the link has a latency, so every message is held until its delivery time
    by a timed wait (a sleep wakes late by tens to hundreds of microseconds in a VM), as
    every message on a slow link is; what is left is the software's cost.
    """
    from disco_zoo.runtime.launch import launch

    link = Link(CALIBRATION_BANDWIDTH_BPS, CALIBRATION_LATENCY_S) if emulated else None
    results = launch(PINGPONG_ENTRY, 2, backend, args={"nbytes": nbytes, "iters": iters}, timeout_s=60, link=link)
    one_way = float(results[0]["median_s"]) - (CALIBRATION_LATENCY_S if emulated else 0.0)
    return one_way, float(results[0]["send_call_s"])


def _line(small: float, large: float) -> tuple[float, float]:
    """(fixed, per byte) of the line through the 1 KB and 1 MiB measurements."""
    per_byte = max(0.0, (large - small) / (LARGE_MESSAGE - SMALL_MESSAGE))
    return max(0.0, small - per_byte * SMALL_MESSAGE), per_byte


def measure_message_cost(backend: str = "mpi", emulated: bool = True, iters: int = 100) -> MessageCost:
    """:class:`MessageCost` from two ping-pongs (1 KB and 1 MiB): for the arrival and
    for the sender's own time, a fixed part and the copying that grows with the message
    (a line through the two)."""
    small, small_send = _pingpong(backend, SMALL_MESSAGE, emulated, iters)
    large, large_send = _pingpong(backend, LARGE_MESSAGE, emulated, iters)
    return MessageCost(*_line(small, large), *_line(small_send, large_send))
