"""MPICH's shared-memory segments of a run's ranks, so that stopping a run removes them.

Local MPICH ranks share a ``/dev/shm/mpich_shm_*`` file that rank finalisation unlinks.
The launcher SIGKILLs its ranks when a run ends (results collected, or a failure), so
no rank finalises and every run would leave its segment behind (1.7 GB of them after a
day of tests, until ``MPI_Init`` failed for lack of room). The segments a run owns are
the ones its ranks map: read from ``/proc/PID/maps`` before the kill, unlinked after
it. Segments of other, concurrent runs are never touched.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MPI_SEGMENT_PREFIX", "mapped_mpi_segments", "unlink_segments"]

MPI_SEGMENT_PREFIX = "/dev/shm/mpich_"


def mapped_mpi_segments(pids: Iterable[int]) -> set[Path]:
    """The MPICH shared-memory files any of ``pids`` maps (gone or unreadable pids: none)."""
    segments: set[Path] = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    path = line.rstrip("\n").split(maxsplit=5)[5:]
                    if path and path[0].startswith(MPI_SEGMENT_PREFIX):
                        segments.add(Path(path[0].removesuffix(" (deleted)")))
        except OSError:
            continue
    return segments


def unlink_segments(segments: Iterable[Path]) -> None:
    """Remove each segment's name (mappings that remain stay valid until unmapped)."""
    for segment in segments:
        try:
            os.unlink(segment)
        except OSError:
            pass
