"""A dead, hung or failing rank ends the run with PeerError naming rank and layer, and
leaves no process behind."""
import os
import time

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.launch import launch

TIMEOUT = 3.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run_failing(tmp_path, backend, mode, world=3):
    start = time.monotonic()
    with pytest.raises(PeerError) as info:
        launch(
            "disco_zoo.runtime.selftest:fail_at", world, backend,
            args={"bad_rank": 1, "mode": mode, "tag": "layer2.conv1", "pid_dir": str(tmp_path)}, timeout_s=TIMEOUT,
        )
    elapsed = time.monotonic() - start
    pids = [int(p) for f in tmp_path.glob("*.pid") for p in f.read_text().split()]
    assert len(pids) == 2 * world
    own = os.getpid()
    leftovers = [p for p in pids if p != own and _alive(p)]
    assert leftovers == [], f"orphaned processes {leftovers}"
    return info.value, elapsed


@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_rank_that_exits_early(tmp_path, backend):
    err, elapsed = _run_failing(tmp_path, backend, "exit")
    assert isinstance(err, DiscoZooError)
    assert err.rank == 1 and err.tag == "layer2.conv1"
    assert "rank 1 died" in str(err)
    assert "ranks 0, 2 were waiting to receive from rank 1 (tag/layer 'layer2.conv1')" in str(err)
    assert elapsed < TIMEOUT + 15  # start-up (torch import) + timeout + grace


@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_rank_that_hangs(tmp_path, backend):
    err, elapsed = _run_failing(tmp_path, backend, "hang")
    assert err.rank == 1 and err.tag == "layer2.conv1"
    assert "rank 1 hung" in str(err)
    assert f"timed out after {TIMEOUT:g} s waiting to receive from rank 1 (tag/layer 'layer2.conv1')" in str(err)
    assert elapsed < TIMEOUT + 15


def test_rank_that_raises_is_reported_first(tmp_path):
    err, _ = _run_failing(tmp_path, "mpi", "raise", world=2)
    assert str(err).startswith("distributed run failed: rank 1 failed: ValueError: deliberate failure; ")
    assert "\n" not in str(err)  # one line: the details are in the log it names
    assert err.rank == 1


def test_wall_timeout_catches_ranks_that_never_wait_on_a_peer():
    with pytest.raises(PeerError, match="still running after 2 s"):
        launch("disco_zoo.runtime.selftest:sleep", 2, "mpi", args={"seconds": 60}, timeout_s=30, wall_timeout_s=2)
