"""Nothing a launch starts outlives the launcher, whatever ends it.

Three layers, each covering what the one before cannot:

* signals: SIGTERM and SIGHUP end a launch the way SIGINT does, by an exception
  (:class:`~disco_zoo.runtime.errors.Interrupted`), so every ``finally`` on the way out
  stops the ranks and removes the run's files (:func:`interrupt_on_signals`);
* the kernel: every process the launcher starts, and every rank, asks for SIGKILL when
  its parent dies (``prctl(PR_SET_PDEATHSIG)``, :func:`die_with_parent`), so a SIGKILLed
  launcher takes its children with it and they take theirs;
* a reaper process (:mod:`disco_zoo.runtime.reaper`, one per launcher process, fed over a
  pipe): when the pipe closes because the launcher died, it SIGKILLs what is registered
  and removes the run's temporary directory, which no dead process can do.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

from disco_zoo.runtime.errors import Interrupted

__all__ = ["interrupt_on_signals", "signals_deferred", "die_with_parent", "preexec_die_with_parent", "reaper",
           "temporary_directory"]

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
INTERRUPTING = (signal.SIGTERM, signal.SIGHUP)
REAPER_SCRIPT = Path(__file__).with_name("reaper.py")


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Interrupted (as SIGINT raises
    KeyboardInterrupt). A handler the program installed itself, or an ignored signal
    (``nohup``), is left alone; outside the main thread, Python cannot handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in INTERRUPTING:
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block (a clean-up) is over: a second
    Ctrl-C must not cut short the killing of the ranks the first one started."""
    held = {signal.SIGINT, *INTERRUPTING}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _prctl() -> Callable[..., int]:
    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(parent_pid: int | None = None, prctl: Callable[..., int] | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux).

    With ``parent_pid``, a parent that is already gone (it died between our fork and this
    call, and we were handed to init) ends this process at once.
    """
    (prctl or _prctl())(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def preexec_die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for Popen making the child die with the calling process.

    The kernel ties the signal to the *thread* that forks: launch from a thread that
    outlives the run (``launch`` blocks until its ranks are gone, so it does).
    """
    return partial(die_with_parent, os.getpid(), _prctl())


class Reaper:
    """The launcher's side of the reaper process: register what a run owns, release it
    when the run has cleaned up after itself."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget_in_child)

    def _forget_in_child(self) -> None:
        """A forked child must not hold the pipe open (the reaper would never see EOF)."""
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self._proc, self._lock = None, threading.Lock()

    def _send(self, message: str) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", str(REAPER_SCRIPT)], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )
            assert self._proc.stdin is not None
            self._proc.stdin.write((message + "\n").encode())
            self._proc.stdin.flush()

    def watch(self, groups: Iterable[int] = (), paths: Iterable[str | Path] = (), markers: Iterable[str] = ()) -> None:
        self._send(_message("watch", groups, paths, markers))

    def forget(self, groups: Iterable[int] = (), paths: Iterable[str | Path] = (), markers: Iterable[str] = ()) -> None:
        if self._proc is not None:
            self._send(_message("forget", groups, paths, markers))


def _message(op: str, groups: Iterable[int], paths: Iterable[str | Path], markers: Iterable[str]) -> str:
    return json.dumps({"op": op, "groups": list(groups), "paths": [str(p) for p in paths], "markers": list(markers)})


_REAPER = Reaper()


def reaper() -> Reaper:
    """This process's reaper (started on first use)."""
    return _REAPER


@contextmanager
def temporary_directory(prefix: str = "disco-zoo-") -> Iterator[Path]:
    """A temporary directory removed when the block ends, however it ends, and by the
    reaper if this process is killed; the path is also the marker of every process whose
    command line names a file in it (a run's spec), which the reaper kills too."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    reaper().watch(paths=[path], markers=[str(path)])
    try:
        yield path
    finally:
        with signals_deferred():
            shutil.rmtree(path, ignore_errors=True)
            reaper().forget(paths=[path], markers=[str(path)])
