"""Start one process per rank, collect their results, and never leave one behind.

MPI ranks are started by the MPICH wheel's ``mpiexec`` (with ``-disable-auto-cleanup``
so that survivors of a dead rank live long enough to report which peer and layer they
were waiting on; we do the cleaning up). gloo ranks are started as plain subprocesses
with an env:// rendezvous (what ``torchrun`` sets too) on a free loopback port; a port
stolen between picking and binding is retried on a fresh one.

mpiexec (and the ranks it starts) or each gloo rank runs in its own session; those
process groups are SIGKILLed when the run ends, plus every recorded rank pid, so a hung
rank cannot outlive the launch.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.link import LinkProfile

__all__ = ["launch", "free_port", "mpiexec_path", "pid_alive", "PeerError"]

GRACE_S = 2.0  # after a failure, extra time survivors get (beyond timeout_s) to report
POLL_S = 0.05


def mpiexec_path() -> str:
    """The mpiexec next to this interpreter (the MPICH wheel's), never one from PATH."""
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        raise DiscoZooError(f"no mpiexec next to {sys.executable}: pip install mpich, or use --backend gloo")
    return str(path)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class _Run:
    """The processes of one attempt and what we know about each rank."""

    out_dir: Path
    world_size: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    pgids: list[int] = field(default_factory=list)  # process groups to SIGKILL at the end
    pids: dict[int, int] = field(default_factory=dict)

    def read_pids(self) -> None:
        for rank in range(self.world_size):
            if rank not in self.pids:
                path = self.out_dir / f"rank{rank}.pid"
                try:
                    self.pids[rank] = int(path.read_text())
                except (OSError, ValueError):
                    pass

    def alive(self, rank: int) -> bool:
        """Is this rank's process still running (or still starting)?"""
        if len(self.procs) == self.world_size:  # gloo: one Popen per rank
            return self.procs[rank].poll() is None
        if rank not in self.pids:  # mpi: not started yet, alive while mpiexec is
            return self.procs[0].poll() is None
        return pid_alive(self.pids[rank])

    def exit_status(self, rank: int) -> int | None:
        return self.procs[rank].returncode if len(self.procs) == self.world_size else None

    def result(self, rank: int) -> dict[str, Any] | None:
        try:
            return json.loads((self.out_dir / f"rank{rank}.json").read_text())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the process group and every recorded rank, then reap."""
        self.read_pids()
        for pgid in self.pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in self.pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
                pass
        deadline = time.monotonic() + 5
        while any(pid_alive(p) for p in self.pids.values()) and time.monotonic() < deadline:
            time.sleep(POLL_S)


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running? (A zombie counts as dead; a pid we may not signal, as alive.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _worker_cmd(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "disco_zoo.runtime.worker", "--spec", str(spec_path)]


def _start(backend: str, spec_path: Path, run: _Run, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if backend == "mpi":
        cmd = [mpiexec_path(), "-n", str(run.world_size), "-disable-auto-cleanup", *_worker_cmd(spec_path)]
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdin=subprocess.DEVNULL)
        run.procs.append(proc)
        run.pgids.append(proc.pid)
        return
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(run.world_size))
    for rank in range(run.world_size):
        rank_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
        proc = subprocess.Popen(_worker_cmd(spec_path), env=rank_env, stdin=subprocess.DEVNULL, start_new_session=True)
        run.procs.append(proc)
        run.pgids.append(proc.pid)


def _monitor(run: _Run, timeout_s: float, wall_timeout_s: float | None) -> tuple[list[Any] | None, str, dict]:
    """Wait for every rank; returns (results, "", {}) or (None, reason, details)."""
    started, failed_at = time.monotonic(), None
    while True:
        run.read_pids()
        alive = {r: run.alive(r) for r in range(run.world_size)}
        results = {r: run.result(r) for r in range(run.world_size)}
        if all(res is not None and res["ok"] for res in results.values()):
            return [results[r]["result"] for r in range(run.world_size)], "", {}
        dead = [r for r in range(run.world_size) if results[r] is None and not alive[r]]
        errors = {r: res for r, res in results.items() if res is not None and not res["ok"]}
        pending = [r for r in range(run.world_size) if results[r] is None and alive[r]]
        now = time.monotonic()
        if any(res.get("type") == "RendezvousError" for res in errors.values()):
            return None, "rendezvous", {"errors": errors}
        if (dead or errors) and failed_at is None:
            failed_at = now
        if failed_at is not None:
            blamed = {res.get("peer") for res in errors.values()} | set(dead)
            # a rank that raised by itself said why: survivors get a short grace, not a timeout
            self_failed = any(res.get("type") != "PeerError" for res in errors.values())
            wait = GRACE_S if self_failed else timeout_s + GRACE_S
            if not pending or set(pending) <= blamed or now > failed_at + wait:
                return None, "failed", {"dead": dead, "errors": errors, "hung": pending}
        elif wall_timeout_s is not None and now > started + wall_timeout_s:
            return None, "wall", {"dead": [], "errors": {}, "hung": pending}
        time.sleep(POLL_S)


def _failure_message(run: _Run, reason: str, details: dict, wall_timeout_s: float | None) -> PeerError:
    """One message, the cause first: ranks that failed by themselves, died or hung, then
    what the ranks waiting on them saw (peer and tag), then bystanders."""
    errors = details["errors"]
    own = {r: res for r, res in errors.items() if res.get("type") != "PeerError"}
    waiting = {r: res for r, res in errors.items() if res.get("type") == "PeerError"}
    blamed = {res.get("peer") for res in waiting.values()}
    culprits: list[int] = []
    lines = []
    for rank, res in sorted(own.items()):
        lines.append(f"rank {rank} failed: {res['error']}")
        culprits.append(rank)
    for rank in details["dead"]:
        status = run.exit_status(rank)
        lines.append(f"rank {rank} died" + (f" (exit status {status})" if status is not None else "") + " before returning a result")
        culprits.append(rank)
    bystanders = []
    for rank in details["hung"]:
        if reason == "wall":
            lines.append(f"rank {rank} still running after {wall_timeout_s:g} s; killed")
        elif rank in blamed:
            lines.append(f"rank {rank} hung (no result, still running); killed")
        else:
            bystanders.append(f"rank {rank} was still running when the run failed; killed")
            continue
        culprits.append(rank)
    for rank, res in sorted(waiting.items()):
        lines.append(res["error"].split(". This is typically")[0])  # gloo's advice is noise
    tag = next((res.get("tag") for res in [*waiting.values(), *own.values()] if res.get("tag")), None)
    if not culprits:
        culprits = sorted(blamed - {None}) or sorted(errors)
    return PeerError(
        "distributed run failed:\n  " + "\n  ".join(lines + bystanders), rank=culprits[0] if culprits else None, tag=tag
    )


def _link_spec(link: LinkProfile | dict[tuple[int, int], LinkProfile] | None) -> Any:
    """JSON form of the link argument: one profile dict, or [[src, dst, profile dict], ...]."""
    if link is None:
        return None
    if isinstance(link, LinkProfile):
        return None if link.is_ideal else link.to_dict()
    return [[src, dst, profile.to_dict()] for (src, dst), profile in sorted(link.items()) if not profile.is_ideal] or None


def launch(
    entry: str,
    world_size: int,
    backend: str = "mpi",
    args: dict[str, Any] | None = None,
    timeout_s: float = 60.0,
    threads_per_rank: int = 1,
    *,
    link: LinkProfile | dict[tuple[int, int], LinkProfile] | None = None,
    wire_dtype: str = "fp32",
    wall_timeout_s: float | None = None,
    retries: int = 3,
) -> list[Any]:
    """Run ``entry(transport, **args)`` on ``world_size`` ranks; results in rank order.

    ``timeout_s`` bounds every wait on a peer: a dead or hung rank makes the run fail
    with PeerError (naming rank and tag) about ``timeout_s`` after it stopped answering.
    ``wall_timeout_s`` optionally bounds the whole run (for ranks that hang without
    ever waiting on a peer). ``link`` emulates every link (one profile for all ordered
    pairs, or a map (src, dst) -> profile); ``wire_dtype`` is 'fp32'/'fp16'.
    """
    if backend not in ("mpi", "gloo"):
        raise DiscoZooError(f"unknown backend {backend!r}: use 'mpi' or 'gloo'")
    if world_size < 1:
        raise DiscoZooError(f"world size must be >= 1, got {world_size}")
    json.dumps(args or {})  # args travel as JSON
    tmp = Path(tempfile.mkdtemp(prefix="disco-zoo-run-"))
    try:
        for attempt in range(retries):
            out_dir = tmp / f"attempt{attempt}"
            out_dir.mkdir()
            spec = {
                "entry": entry, "args": args or {}, "backend": backend, "timeout_s": timeout_s,
                "wire_dtype": wire_dtype, "link": _link_spec(link),
                "threads_per_rank": threads_per_rank, "out_dir": str(out_dir),
            }
            spec_path = out_dir / "spec.json"
            spec_path.write_text(json.dumps(spec))
            run = _Run(out_dir, world_size)
            try:
                _start(backend, spec_path, run, threads_per_rank)
                results, reason, details = _monitor(run, timeout_s, wall_timeout_s)
            finally:
                run.kill()
            if results is not None:
                return results
            if reason == "rendezvous" and attempt + 1 < retries:
                continue  # the port was taken: try again on a fresh one
            if reason == "rendezvous":
                first = next(iter(details["errors"].values()))
                raise PeerError(f"could not set up the {backend} process group: {first['error']}")
            raise _failure_message(run, reason, details, wall_timeout_s)
        raise AssertionError("unreachable")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
