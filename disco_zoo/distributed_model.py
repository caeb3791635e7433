"""A DISCO model that applications call like any model, its nodes in processes of their own.

    with disco_zoo.distributed("resnet50_disco_2node.digits") as model:
        logits = model(batch)          # as many calls as you like; each rank loaded its shard once

Why a session object and not ``create_model``: ``create_model`` on a DISCO folder runs
every node in one process (fine for accuracy, useless for splitting work across
devices), and ``disco-zoo run`` starts, loads and stops the ranks for each inference.
Here the ranks start once (MPI by default, or gloo; :mod:`disco_zoo.runtime.launch`
does the starting, the polling and the killing) and serve calls in a loop
(:mod:`disco_zoo.runtime.service`). The application's process is not a rank: it hands
each batch to rank 0 (the root device's rank) over a private Unix socket and gets the
output back; rank 0 scatters the image and the ranks exchange exactly the messages the
accounting predicts.

Multi-host: with ``launch=False`` only rank 0 starts here (gloo), and every other device
runs ``disco-zoo node MODEL --rank K --master-addr ROOT --master-port PORT``. MPI cannot
attach processes started separately, so that form is gloo only.

Nothing outlives the session: ``close()`` (``__exit__``, also on an exception in the
``with`` block, and at interpreter exit) stops the ranks and removes the run's files;
every rank dies with the thread that started it (the ranks are started from one
long-lived thread of this module, so a session opened in a short-lived thread survives
it) and the runtime's reaper kills what is left if this process is killed. A rank that
dies or fails makes the current (or next) call raise the runtime's one-line
:class:`~disco_zoo.runtime.errors.PeerError`, within the timeout.
"""
from __future__ import annotations

import atexit
import math
import os
import queue
import secrets
import threading
import time
import weakref
from concurrent.futures import Future
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, TypeVar

from disco_zoo.errors import DiscoZooError

__all__ = ["distributed", "DistributedModel"]

POLL_S = 0.05
STOP_WAIT_S = 10.0  # how long a clean stop may take before the ranks are killed
T = TypeVar("T")


class _Spawner:
    """One daemon thread that starts every session's ranks: a child dies with the
    *thread* that forked it (PR_SET_PDEATHSIG), and this one lives as long as the process."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _loop(self) -> None:
        while True:
            fn, done = self._jobs.get()
            try:
                done.set_result(fn())
            except BaseException as err:  # handed to the caller
                done.set_exception(err)

    def call(self, fn: Callable[[], T]) -> T:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="disco-zoo-spawner", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((fn, done))
        return done.result()


_SPAWNER = _Spawner()
_OPEN: "weakref.WeakSet[DistributedModel]" = weakref.WeakSet()


@atexit.register
def _close_open_sessions() -> None:
    for session in list(_OPEN):
        session.close()


def _resolve(model: str) -> tuple[Any, str]:
    """(root's folder config, what each rank resolves): a folder path stays a path; a
    published name is resolved by each rank for its own node (it fetches only its shard)."""
    from disco_zoo.store import CONFIG_NAME, load_folder_config

    if (Path(model) / CONFIG_NAME).is_file():
        return load_folder_config(model), str(model)
    from disco_zoo.hub import folder_name, resolve_folder

    return load_folder_config(resolve_folder(model, node=0)), folder_name(model)


def _check_options(timeout_s: Any, start_timeout_s: Any, idle_timeout_s: Any, wire_dtype: Any, threads: Any) -> None:
    """Bad options fail here, at once, not in a rank after its start-up."""
    from disco_zoo.runtime.transport import WIRE_DTYPES

    for name, value in (("timeout_s", timeout_s), ("start_timeout_s", start_timeout_s),
                        ("idle_timeout_s", idle_timeout_s)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise DiscoZooError(f"{name} must be a positive number of seconds, got {value!r}")
    if wire_dtype not in WIRE_DTYPES:
        raise DiscoZooError(f"wire_dtype must be one of {', '.join(map(repr, WIRE_DTYPES))}, got {wire_dtype!r}")
    if not isinstance(threads, int) or threads < 1:
        raise DiscoZooError(f"threads must be a whole number >= 1, got {threads!r}")


class DistributedModel:
    """A running DISCO session: call it with a batch, get the output tensor.

    After :meth:`close`, ``traffic`` holds the bytes the session's calls put on the wire
    (``{"pairs": {(src, dst): n}, "tags": {layer: n}}``, every rank's counters merged;
    exactly the accounting's messages), ``request_bytes`` the request headers rank 0
    sent besides (32 bytes per peer per call), and ``calls`` the calls served.
    """

    def __init__(self, model: str, nodes: int | None = None, *, backend: str | None = None, launch: bool = True,
                 master_addr: str = "127.0.0.1", master_port: int | None = None, iface: str | None = None,
                 timeout_s: float = 60.0, start_timeout_s: float | None = None, bandwidth: str | None = None,
                 latency: str | None = None, wire_dtype: str = "fp32", threads: int = 1,
                 idle_timeout_s: float | None = None, verify: bool = True) -> None:
        from disco_zoo.runtime.service import IDLE_TIMEOUT_S
        from disco_zoo.timing.links import Link

        self.pretrained_cfg, source = _resolve(model)
        config = self.pretrained_cfg
        if config.kind != "disco":
            raise DiscoZooError(f"{config.name} is a dense model: distributed() runs a DISCO folder "
                                "(a *_disco_* name, or one made by disco-zoo sparsify)")
        if nodes is not None and nodes != config.nodes:
            raise DiscoZooError(f"{config.name} is split over {config.nodes} nodes; pass nodes={config.nodes}, not {nodes}")
        backend = backend or ("mpi" if launch else "gloo")
        if backend not in ("mpi", "gloo"):
            raise DiscoZooError(f"unknown backend {backend!r}: use 'mpi' or 'gloo'")
        link = Link.parse(bandwidth, latency)
        _check_options(timeout_s, start_timeout_s, idle_timeout_s, wire_dtype, threads)
        if not launch:
            if backend != "gloo":
                raise DiscoZooError("launch=False needs backend='gloo': MPI cannot attach ranks started separately "
                                    "(disco-zoo node)")
            if master_port is None:
                raise DiscoZooError("launch=False needs master_port=: the port rank 0's rendezvous listens on, "
                                    "which every `disco-zoo node` is given as --master-port")
            if not link.is_ideal:
                raise DiscoZooError("link emulation needs every rank started here (launch=True); "
                                    "across hosts the link is real")
        self.name, self.nodes, self.backend, self.launch = config.name, config.nodes, backend, launch
        self.timeout_s, self.wire_dtype = float(timeout_s), wire_dtype
        self.calls, self.traffic, self.request_bytes = 0, None, None
        self.load_stats: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self._run: Any = None
        self._conn: Any = None
        self._error: BaseException | None = None
        self._closed = False
        self._busy = False
        self._master = (master_addr, int(master_port), config.nodes) if not launch else None
        args = {"folder": source, "idle_timeout_s": idle_timeout_s or IDLE_TIMEOUT_S, "verify": verify}
        start_timeout_s = start_timeout_s or 2 * self.timeout_s + 120
        try:
            self._start(args, link, iface, threads, start_timeout_s)
        except BaseException:
            self._kill()
            raise
        _OPEN.add(self)

    # -- starting ---------------------------------------------------------------------------
    def _start(self, args: dict[str, Any], link: Any, iface: str | None, threads: int, start_timeout_s: float) -> None:
        from multiprocessing.connection import Client

        from disco_zoo.runtime.launch import poll_run, start_ranks, stop_run, write_spec
        from disco_zoo.runtime.lifetime import temporary_directory
        from disco_zoo.runtime.service import SERVE_ENTRY, recv_frame

        tmp = self._stack.enter_context(temporary_directory(prefix="disco-zoo-serve-"))
        retries = 3 if self.backend == "gloo" and self.launch else 1  # a port taken under our feet: a fresh one
        for attempt in range(retries):
            out_dir = tmp / f"attempt{attempt}"
            out_dir.mkdir()
            key = secrets.token_hex(32)
            control = out_dir / "control.sock"
            spec = write_spec(out_dir, SERVE_ENTRY, {**args, "control": str(control), "authkey": key}, self.backend,
                              self.timeout_s, threads, link, self.wire_dtype, iface)
            self._run = _SPAWNER.call(lambda: start_ranks(spec, self.nodes, self.backend, threads, self._master))
            deadline = time.monotonic() + start_timeout_s
            while self._conn is None:
                state = poll_run(self._run)
                if state is not None and state[1] == "rendezvous" and attempt + 1 < retries:
                    stop_run(self._run)
                    break
                if state is not None:
                    raise self._failure(state)
                if control.exists():
                    try:
                        self._conn = Client(str(control), family="AF_UNIX", authkey=bytes.fromhex(key))
                    except (ConnectionRefusedError, FileNotFoundError):
                        pass  # bound, not yet listening
                if time.monotonic() > deadline:
                    raise DiscoZooError(f"the ranks of {self.name} did not start within {start_timeout_s:g} s")
                if self._conn is None:
                    time.sleep(POLL_S)
            if self._conn is not None:
                header, _ = self._reply(recv_frame, deadline)
                self.load_stats = {k: v for k, v in header.items() if k != "op"}
                return

    # -- calling ----------------------------------------------------------------------------
    def __call__(self, x: Any) -> Any:
        """The model's output for the batch ``x`` (B, C, H, W): a float32 tensor, or the
        model's own tuple/dict of them (e.g. a segmenter's ``{"out": ...}``)."""
        from disco_zoo.runtime.launch import poll_run
        from disco_zoo.runtime.service import recv_output, send_frame

        x = self._check_input(x)
        with self._lock:
            self._check_usable()
            state = poll_run(self._run)  # a rank that died since the last call: say so now
            if state is not None:
                raise self._failure(state)
            self._busy = True
            try:
                send_frame(self._conn, {"op": "call"}, x)
            except OSError:
                pass  # rank 0 has gone: the reply's wait says why
            _, out = self._reply(recv_output)
            self._busy = False
            self.calls += 1
            return out

    forward = __call__

    def _check_input(self, x: Any) -> Any:
        import torch

        c = self.pretrained_cfg
        want = f"a batch (B, {', '.join(map(str, c.input_size))})"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise DiscoZooError(f"{self.name} takes {want} float tensor, got {type(x).__name__}"
                                f"{' of ' + str(x.dtype) if isinstance(x, torch.Tensor) else ''}")
        if x.dim() != len(c.input_size) + 1 or x.shape[1] != c.input_size[0] or x.shape[0] < 1:
            hint = "; add the batch dimension with x[None]" if x.dim() == len(c.input_size) else ""
            raise DiscoZooError(f"{self.name} takes {want}, got shape {tuple(x.shape)}{hint}")
        if c.fixed_input_size and tuple(x.shape[2:]) != tuple(c.input_size[1:]):
            raise DiscoZooError(f"{self.name} takes only {tuple(c.input_size[1:])} inputs (fixed input size), "
                                f"got {tuple(x.shape[2:])}")
        return x.detach().to(torch.float32).contiguous().cpu()

    def _check_usable(self) -> None:
        if self._error is not None:
            raise DiscoZooError(f"the distributed model {self.name} has stopped after a failure: {self._error}")
        if self._closed:
            raise DiscoZooError(f"the distributed model {self.name} is closed; open a new one")

    def _reply(self, recv: Callable[[Any], T], deadline: float | None = None) -> T:
        """Rank 0's next frame, watching every local rank meanwhile: a failed or dead rank
        raises its PeerError now (rank 0's own waits on peers are bounded by the timeout)."""
        from disco_zoo.runtime.launch import poll_run

        eof_at = None
        while True:
            if eof_at is None:
                try:
                    if self._conn.poll(POLL_S):
                        return recv(self._conn)
                except (EOFError, OSError):
                    eof_at = time.monotonic()  # rank 0 went: its record says why, in a moment
            else:
                time.sleep(POLL_S)
            state = poll_run(self._run)
            if state is not None or (eof_at is not None and time.monotonic() > eof_at + STOP_WAIT_S):
                raise self._failure(state)
            if deadline is not None and time.monotonic() > deadline:
                raise self._failure(None, "did not answer in time")

    def _failure(self, state: Any, why: str = "closed its connection without a reason") -> BaseException:
        """Stop everything and return the error to raise (kept: later calls repeat it)."""
        from disco_zoo.runtime.errors import PeerError
        from disco_zoo.runtime.launch import run_failure

        error: BaseException
        if state is None or state[0] is not None:
            error = PeerError(f"distributed run failed: rank 0 of {self.name} {why}", rank=0)
        elif self.launch:
            error = run_failure(self._run, state[1], {"dead": [], "running": [], "stopped": set(), **state[2]},
                                self.timeout_s)
        else:
            error = self._root_failure(state[2])
        self._error = error
        self._kill()
        return error

    def _root_failure(self, details: dict[str, Any]) -> BaseException:
        """With the peers elsewhere, rank 0 is the only witness: its own words, and a log."""
        from disco_zoo.runtime.errors import PeerError
        from disco_zoo.runtime.failure_report import RunState, describe_failure
        from disco_zoo.runtime.run_log import write_log

        record = details.get("errors", {}).get(0)
        text = record["error"] if record else "rank 0 died before returning a result"
        report = describe_failure(RunState(self._run.out_dir, 1, "failed", details.get("dead", []),
                                           details.get("errors", {}), [], outputs=self._run.outputs))
        path, why = write_log(report.log_text)
        summary = " ".join(text.split(". This is typically")[0].splitlines())
        return PeerError(f"distributed run failed: {summary}. " + (f"full log: {path}" if path else f"no log written ({why})"),
                         rank=record.get("peer") if record else 0, tag=record.get("tag") if record else None)

    @property
    def rank_pids(self) -> dict[int, int]:
        """The process id of each rank running on this machine (to watch or to signal them)."""
        self._run.read_pids()
        return dict(self._run.pids)

    # -- stopping ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the ranks (cleanly when idle and healthy, else by SIGKILL); idempotent."""
        if self._closed:
            return
        self._closed = True
        _OPEN.discard(self)
        try:
            if self._conn is not None and self._error is None and not self._busy:
                self._stop_cleanly()
        finally:
            self._kill()

    def _stop_cleanly(self) -> None:
        from disco_zoo.runtime.launch import poll_run
        from disco_zoo.runtime.service import recv_frame, send_frame
        from disco_zoo.runtime.transport import ByteCounter

        with self._lock:
            try:
                if poll_run(self._run) is not None:
                    return  # a rank has gone: killed below
                send_frame(self._conn, {"op": "stop"})
                header, _ = self._reply(recv_frame, time.monotonic() + STOP_WAIT_S)
            except (DiscoZooError, OSError):
                return  # killed below; the error was recorded
            self.traffic = ByteCounter.merge(header["bytes"])
            self.request_bytes = header["request_bytes"]
            deadline = time.monotonic() + STOP_WAIT_S
            while poll_run(self._run) is None and time.monotonic() < deadline:  # let the ranks exit by themselves
                time.sleep(POLL_S)

    def _kill(self) -> None:
        from disco_zoo.runtime.launch import stop_run

        if self._conn is not None:
            self._conn.close()
        if self._run is not None:
            stop_run(self._run)
        self._stack.close()

    def __enter__(self) -> "DistributedModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "failed" if self._error else "closed" if self._closed else "running"
        return f"DistributedModel({self.name!r}, nodes={self.nodes}, backend={self.backend!r}, {state})"


def distributed(model: str | os.PathLike[str], nodes: int | None = None, **options: Any) -> DistributedModel:
    """Start ``model`` (a published DISCO name or a DISCO folder) split over its nodes, one
    process per node, and return it running; use it in a ``with`` block (or call
    ``close()``).

    Options: ``backend`` ('mpi' default, or 'gloo'); ``timeout_s`` (bounds every wait on a
    peer); ``bandwidth``/``latency`` (emulate the link, e.g. '10mbit', '2ms');
    ``wire_dtype`` ('fp32'/'fp16'); ``threads`` (torch threads per rank). Across hosts:
    ``launch=False, master_addr=ROOT_ADDRESS, master_port=PORT`` (and ``iface=``) starts
    only rank 0 here; each other device runs ``disco-zoo node MODEL --rank K`` with the
    same address and port.
    """
    return DistributedModel(str(model), nodes, **options)
