"""Start one process per rank, collect their results, and never leave one behind.

MPI ranks are started by the MPICH wheel's ``mpiexec.gforker``, its process manager for
one machine: it talks to the ranks over pipes, where hydra's ``mpiexec`` listens on
every interface with no option to bind loopback; the ranks' own sockets are kept on the
loopback interface (``UCX_NET_DEVICES=lo``). gloo ranks are started as plain
subprocesses with an env:// rendezvous on a free loopback port, the store bound to
127.0.0.1 only (see gloo_backend); a port stolen between picking and binding is retried
on a fresh one. Nothing a local run opens is reachable from another machine.

The launch stops as soon as a rank fails, dies or (seen by a peer's timeout) hangs, and
names the first such rank and what the others were waiting for (their wait boards, see
rank_status). The ranks' output and tracebacks go to a log file that the error names
(run_log), not to the terminal.

Nothing outlives the launch (lifetime): SIGTERM/SIGHUP interrupt it like SIGINT; every
process started dies with its parent (PR_SET_PDEATHSIG); mpiexec and each gloo rank run
in their own session, SIGKILLed as a group when the run ends; and a reaper process
kills what is left and removes the run's directory if the launcher itself is killed.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.failure_report import RunState, describe_failure
from disco_zoo.runtime.lifetime import (
    interrupt_on_signals, preexec_die_with_parent, reaper, signals_deferred, temporary_directory,
)
from disco_zoo.runtime.run_log import write_log
from disco_zoo.runtime.shared_memory import mapped_mpi_segments, unlink_segments
from disco_zoo.timing.links import Link

__all__ = ["launch", "free_port", "mpiexec_path", "local_mpiexec_path", "pid_alive", "PeerError", "LOCAL_NET_ENV",
           "Run", "write_spec", "start_ranks", "poll_run", "run_failure", "stop_run"]

POLL_S = 0.05
LOCAL_NET_ENV = {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo"}  # MPI ranks' sockets: loopback only


def mpiexec_path() -> str:
    """The mpiexec next to this interpreter (the MPICH wheel's), never one from PATH."""
    path = Path(sys.executable).parent / "mpiexec"
    if not path.exists():
        raise DiscoZooError(f"no mpiexec next to {sys.executable}: pip install mpich, or use --backend gloo")
    return str(path)


def local_mpiexec_path() -> str:
    """The MPICH wheel's single-machine process manager (no listening socket)."""
    path = Path(sys.executable).parent / "mpiexec.gforker"
    if not path.exists():
        raise DiscoZooError(f"no mpiexec.gforker next to {sys.executable}: pip install mpich, or use --backend gloo")
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
    outputs: list[Path] = field(default_factory=list)  # each process's captured stdout + stderr

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

    def stopped(self, rank: int) -> bool:
        """Is this rank's process stopped (SIGSTOP, a debugger)?"""
        pid = self.procs[rank].pid if len(self.procs) == self.world_size else self.pids.get(rank)
        return pid is not None and _proc_state(pid) in ("T", "t")

    def exit_status(self, rank: int) -> int | None:
        return self.procs[rank].returncode if len(self.procs) == self.world_size else None

    def result(self, rank: int) -> dict[str, Any] | None:
        try:
            return json.loads((self.out_dir / f"rank{rank}.json").read_text())
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL the process groups and every recorded rank, reap, and remove the MPI
        shared-memory segments they mapped (killed ranks never finalise)."""
        self.read_pids()
        segments = mapped_mpi_segments([*self.pids.values(), *(proc.pid for proc in self.procs)])
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
        unlink_segments(segments)


def _proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...); '' if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def pid_alive(pid: int) -> bool:
    """Is ``pid`` running? (A zombie counts as dead; a pid we may not signal, as alive.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "")


def _worker_cmd(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "disco_zoo.runtime.worker", "--spec", str(spec_path)]


def _popen(cmd: list[str], env: dict[str, str], run: _Run, output: Path) -> None:
    """Start ``cmd`` in its own session, dying with us, its output captured in ``output``."""
    with open(output, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=preexec_die_with_parent())
    run.procs.append(proc)
    run.pgids.append(proc.pid)
    run.outputs.append(output)
    reaper().watch(groups=[proc.pid])


def _start(backend: str, spec_path: Path, run: _Run, threads: int,
           master: tuple[str, int, int] | None = None) -> None:
    """Start every rank of ``run`` on this machine; or, with ``master`` (address, port,
    world size), only gloo rank 0, whose peers join that rendezvous from elsewhere."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    if backend == "mpi":
        cmd = [local_mpiexec_path(), "-n", str(run.world_size), *_worker_cmd(spec_path)]
        _popen(cmd, dict(env, **LOCAL_NET_ENV), run, run.out_dir / "mpiexec.out")
        return
    if master is not None:
        address, port, world = master
        env.update(MASTER_ADDR=address, MASTER_PORT=str(port), WORLD_SIZE=str(world))
    else:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(run.world_size),
                   GLOO_SOCKET_IFNAME="lo")  # gloo's pairs on loopback, whatever the caller's environment says
    for rank in range(run.world_size):
        rank_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank))
        _popen(_worker_cmd(spec_path), rank_env, run, run.out_dir / f"rank{rank}.out")


def poll_run(run: _Run) -> tuple[list[Any] | None, str, dict] | None:
    """One look at the ranks: None while they run and none has failed; (results, "", {})
    once every rank has returned; (None, reason, details) once one has failed or died."""
    run.read_pids()
    alive = {r: run.alive(r) for r in range(run.world_size)}
    results = {r: run.result(r) for r in range(run.world_size)}
    if all(res is not None and res["ok"] for res in results.values()):
        return [results[r]["result"] for r in range(run.world_size)], "", {}
    dead = [r for r in range(run.world_size) if results[r] is None and not alive[r]]
    errors = {r: res for r, res in results.items() if res is not None and not res["ok"]}
    running = [r for r in range(run.world_size) if results[r] is None and alive[r]]
    if any(res.get("type") == "RendezvousError" for res in errors.values()):
        return None, "rendezvous", {"errors": errors}
    if dead or errors:  # which running ranks are stopped is read now, before they are killed
        stopped = {r for r in running if run.stopped(r)}
        return None, "failed", {"dead": dead, "errors": errors, "running": running, "stopped": stopped}
    return None


def _monitor(run: _Run, wall_timeout_s: float | None) -> tuple[list[Any] | None, str, dict]:
    """Wait for every rank; returns (results, "", {}) or, the moment a rank has failed or
    died (or the wall-clock limit passed), (None, reason, details)."""
    started = time.monotonic()
    while True:
        state = poll_run(run)
        if state is not None:
            return state
        if wall_timeout_s is not None and time.monotonic() > started + wall_timeout_s:
            running = [r for r in range(run.world_size) if run.result(r) is None and run.alive(r)]
            return None, "wall", {"dead": [], "errors": {}, "running": running, "stopped": set()}
        time.sleep(POLL_S)


def run_failure(run: _Run, reason: str, details: dict, timeout_s: float, wall_timeout_s: float | None = None) -> PeerError:
    """The run's PeerError: one summary line that ends naming the log with the details."""
    state = RunState(
        out_dir=run.out_dir, world_size=run.world_size, reason=reason, dead=details["dead"],
        errors=details["errors"], running=details["running"],
        exit_status={r: run.exit_status(r) for r in details["dead"]},
        stopped=details["stopped"],
        timeout_s=timeout_s, wall_timeout_s=wall_timeout_s, outputs=run.outputs,
    )
    report = describe_failure(state)
    return _with_log(report.summary, report.log_text, rank=report.rank, tag=report.tag)


def _with_log(summary: str, log_text: str, rank: int | None = None, tag: str | None = None) -> PeerError:
    path, why = write_log(log_text)
    where = f"full log: {path}" if path else f"no log written ({why})"
    return PeerError(f"{summary}. {where}", rank=rank, tag=tag)


def _link_spec(link: Link | dict[tuple[int, int], Link] | None) -> Any:
    """JSON form of the link argument: one profile dict, or [[src, dst, profile dict], ...]."""
    if link is None:
        return None
    if isinstance(link, Link):
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
    link: Link | dict[tuple[int, int], Link] | None = None,
    wire_dtype: str = "fp32",
    wall_timeout_s: float | None = None,
    retries: int = 3,
) -> list[Any]:
    """Run ``entry(transport, **args)`` on ``world_size`` ranks; results in rank order.

    ``timeout_s`` bounds every wait on a peer, emulated delivery included: a hung rank
    makes the run fail with PeerError (naming rank and tag) about ``timeout_s`` after it
    stopped answering, a dead or failing one at once. ``wall_timeout_s`` optionally
    bounds the whole run (for ranks that hang without ever waiting on a peer). ``link``
    emulates every link (one profile for all ordered pairs, or a map (src, dst) ->
    profile); ``wire_dtype`` is 'fp32'/'fp16'. SIGTERM or SIGHUP during the run raise
    :class:`~disco_zoo.runtime.errors.Interrupted` after every rank is stopped.
    """
    if backend not in ("mpi", "gloo"):
        raise DiscoZooError(f"unknown backend {backend!r}: use 'mpi' or 'gloo'")
    if world_size < 1:
        raise DiscoZooError(f"world size must be >= 1, got {world_size}")
    for name, value in (("timeout_s", timeout_s), ("wall_timeout_s", wall_timeout_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise DiscoZooError(f"{name} must be a positive number of seconds, got {value!r}: it bounds every wait")
    json.dumps(args or {})  # args travel as JSON
    with interrupt_on_signals(), temporary_directory(prefix="disco-zoo-run-") as tmp:
        return _attempts(entry, world_size, backend, args or {}, timeout_s, threads_per_rank, link, wire_dtype,
                         wall_timeout_s, retries, tmp)


def _attempts(entry: str, world_size: int, backend: str, args: dict[str, Any], timeout_s: float, threads: int,
              link: Any, wire_dtype: str, wall_timeout_s: float | None, retries: int, tmp: Path) -> list[Any]:
    """Start the ranks; a port taken under the gloo rendezvous is retried on a fresh one."""
    for attempt in range(retries):
        out_dir = tmp / f"attempt{attempt}"
        out_dir.mkdir()
        spec_path = write_spec(out_dir, entry, args, backend, timeout_s, threads, link, wire_dtype)
        run = _Run(out_dir, world_size)
        try:
            _start(backend, spec_path, run, threads)
            results, reason, details = _monitor(run, wall_timeout_s)
        finally:
            stop_run(run)
        if results is not None:
            return results
        if reason == "rendezvous" and attempt + 1 < retries:
            continue  # the port was taken: try again on a fresh one
        if reason == "rendezvous":
            first = next(iter(details["errors"].values()))
            raise _with_log(f"could not set up the {backend} process group: {first['error']}",
                            first.get("traceback", ""))
        raise run_failure(run, reason, details, timeout_s, wall_timeout_s)
    raise AssertionError("unreachable")


# -- a run that outlives one call: started, polled and stopped by its owner ---------------

Run = _Run


def write_spec(out_dir: Path, entry: str, args: dict[str, Any], backend: str, timeout_s: float, threads: int,
               link: Link | dict[tuple[int, int], Link] | None, wire_dtype: str, iface: str | None = None) -> Path:
    """The spec every rank of a run reads (``worker --spec``); returns its path."""
    spec = {
        "entry": entry, "args": args, "backend": backend, "timeout_s": timeout_s,
        "wire_dtype": wire_dtype, "link": _link_spec(link),
        "threads_per_rank": threads, "out_dir": str(out_dir), "supervised": True, "iface": iface,
    }
    spec_path = out_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    return spec_path


def start_ranks(spec_path: Path, world_size: int, backend: str, threads: int,
                master: tuple[str, int, int] | None = None) -> _Run:
    """Start the ranks of ``spec_path``'s run (with ``master``, only gloo rank 0 of a
    rendezvous at (address, port, world size)); the caller polls (:func:`poll_run`) and
    must end it with :func:`stop_run`. Until then the reaper kills them if we die."""
    run = _Run(spec_path.parent, 1 if master is not None else world_size)
    try:
        _start(backend, spec_path, run, threads, master)
    except BaseException:
        stop_run(run)
        raise
    return run


def stop_run(run: _Run) -> None:
    """SIGKILL every process of ``run`` (signals held meanwhile) and release them."""
    with signals_deferred():
        run.kill()
        reaper().forget(groups=run.pgids)
