"""The machine and versions a result was measured with (recorded in every result file)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from disco_zoo.harness.report import Environment

__all__ = ["environment", "THREADS_PER_RANK"]

THREADS_PER_RANK = 1  # every timed process runs torch on one thread (the launcher's default)


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def environment(backend: str) -> Environment:
    import mpi4py
    import timm
    import torch

    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        timm=timm.__version__,
        mpi4py=mpi4py.__version__,
        platform=platform.platform(),
        cpu=_cpu_name(),
        cores=os.cpu_count(),
        threads_per_rank=THREADS_PER_RANK,
        backend=backend,
    )
