"""A run's ranks are SIGKILLed when it ends, so the launcher must remove the MPICH
shared-memory segments they mapped, on success and on failure alike."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.shared_memory import MPI_SEGMENT_PREFIX, mapped_mpi_segments, unlink_segments

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs /dev/shm (Linux)")


def _mpi_segments() -> set[Path]:
    return set(SHM.glob("mpich_*"))


def test_segments_are_the_ones_a_process_maps(tmp_path: Path) -> None:
    mine = Path(f"{MPI_SEGMENT_PREFIX}disco_zoo_test_{os.getpid()}")
    other = Path(f"{MPI_SEGMENT_PREFIX}disco_zoo_test_{os.getpid()}_unmapped")
    for path in (mine, other):
        path.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import mmap, sys; f = open(sys.argv[1], 'r+b'); m = mmap.mmap(f.fileno(), 4096); "
         "print('mapped', flush=True); sys.stdin.read()", str(mine)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        assert mapped_mpi_segments([holder.pid]) == {mine}
        assert mapped_mpi_segments([2**22 + 12345]) == set()  # no such process
    finally:
        holder.communicate("")
        unlink_segments([mine, other])
    assert not mine.exists() and not other.exists()


def test_a_finished_mpi_run_leaves_no_segment() -> None:
    before = _mpi_segments()
    results = launch("disco_zoo.runtime.selftest:ping", 2, "mpi", args={"size": 64}, timeout_s=30)
    assert len(results) == 2
    assert _mpi_segments() - before == set()


def test_a_failed_mpi_run_leaves_no_segment() -> None:
    before = _mpi_segments()
    with pytest.raises(DiscoZooError):
        launch("disco_zoo.runtime.selftest:fail_at", 2, "mpi", args={"bad_rank": 1, "mode": "raise"}, timeout_s=30)
    assert _mpi_segments() - before == set()
