"""How fast this host computes: the rates a device profile records for it.

Why in the library: ``disco-zoo profile`` writes them into a profile, and the EdgeFlow
executor needs them to know which devices it can emulate by stretching compute; the
library never imports the CLI, so both read them from here.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable

__all__ = ["measure_rates", "device_entry", "host_rate_share"]


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_rates(repeats: int = 3, threads: int | None = None) -> dict[str, float]:
    """FLOP/s for convolutions and matmuls: FlopCounterMode FLOPs over the best wall time."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if threads:
        torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.randn(1, 64, 56, 56)
    a, b = torch.randn(256, 1024), torch.randn(1024, 1024)
    work = {"conv": lambda: conv(x), "linear": lambda: a @ b}
    rates = {}
    with torch.no_grad():
        for op, fn in work.items():
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            flops = counter.get_total_flops()
            fn()  # warm-up
            best = min(_timed(fn) for _ in range(repeats))
            rates[op] = flops / best
    return rates


def device_entry(name: str, rates: dict[str, float], memory_bytes: int | None) -> dict[str, Any]:
    """A device profile entry (the JSON a profile's ``devices`` list holds) for these rates."""
    entry: dict[str, Any] = {"name": name, "flops": rates["conv"], "flops_by_op": dict(rates),
                             "basis": "measured by `disco-zoo profile` (FlopCounterMode FLOPs / best wall time)"}
    if memory_bytes:
        entry["memory_bytes"] = memory_bytes
    return entry


def host_rate_share(world_size: int) -> float:
    """FLOP/s one rank can count on here: one thread's conv rate times its share of the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return measure_rates(repeats=2, threads=1)["conv"] * min(1.0, cores / world_size)
