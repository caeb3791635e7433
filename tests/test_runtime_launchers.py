"""The worker module under the multi-host launchers (on localhost), and port retries."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import disco_zoo.runtime.launch as launch_mod
from disco_zoo.runtime.launch import free_port, launch, mpiexec_path
from disco_zoo.runtime.worker import RESULT_PREFIX

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]


def _results(stdout: str) -> dict[int, dict]:
    rows = [json.loads(line[len(RESULT_PREFIX):]) for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return {row["rank"]: row for row in rows}


def test_mpiexec_hosts_form_starts_the_worker_directly():
    cmd = [
        mpiexec_path(), "-hosts", "localhost", "-n", "2", sys.executable, "-m", "disco_zoo.runtime.worker",
        "--entry", "disco_zoo.runtime.selftest:ping", "--args", '{"size": 64}', "--timeout", "20",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    rows = _results(proc.stdout)
    assert sorted(rows) == [0, 1] and all(r["ok"] for r in rows.values())
    assert rows[0]["result"]["bytes"]["pairs"] == {"0->1": 64}
    assert rows[1]["result"]["world_size"] == 2


def test_torchrun_form_starts_the_worker_directly():
    cmd = [
        str(BIN / "torchrun"), "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
        "--master-port", str(free_port()), "-m", "disco_zoo.runtime.worker",
        "--entry", "disco_zoo.runtime.selftest:ping", "--args", '{"size": 64}', "--timeout", "20",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _results(proc.stdout)
    assert sorted(rows) == [0, 1] and all(r["ok"] for r in rows.values())
    assert rows[1]["result"]["bytes"]["pairs"] == {"1->0": 64}


def test_gloo_launch_retries_when_the_port_is_taken(monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ports = [busy.getsockname()[1]]
    picked = []

    def first_the_busy_port() -> int:
        port = ports.pop() if ports else free_port()
        picked.append(port)
        return port

    monkeypatch.setattr(launch_mod, "free_port", first_the_busy_port)
    try:
        results = launch("disco_zoo.runtime.selftest:ping", 2, "gloo", args={"size": 64}, timeout_s=20)
    finally:
        busy.close()
    assert len(picked) == 2 and picked[0] != picked[1]
    assert [r["rank"] for r in results] == [0, 1]


def test_worker_without_launcher_needs_gloo_env():
    proc = subprocess.run(
        [sys.executable, "-m", "disco_zoo.runtime.worker", "--backend", "gloo", "--entry", "disco_zoo.runtime.selftest:ping"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    row = _results(proc.stdout)[0]
    assert not row["ok"] and "MASTER_ADDR" in row["error"] and "torchrun" in row["error"]


def test_unknown_backend_is_a_clear_error():
    from disco_zoo.errors import DiscoZooError

    with pytest.raises(DiscoZooError, match="unknown backend 'nccl'"):
        launch("disco_zoo.runtime.selftest:ping", 2, "nccl")
