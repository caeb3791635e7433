"""Progress that shows in a terminal and in a log.

Why a module: rich's spinners and bars draw only on a terminal, so a command whose
output went to a file (CI, ``nohup``, ``| tee``) printed nothing for minutes (``eval``
was silent for 3+ minutes). Every long command reports through here: a live spinner or
bar when its stream is a terminal, and otherwise one plain, timestamped line per step,
flushed at once. The stream is stdout, beside the command's table, unless stdout holds
a ``--json`` document (``stderr=True``): stdout then carries the document alone, and
stderr keeps only progress and, for bad input, the one ``error:`` line.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

__all__ = ["interactive", "log_line", "status"]


def interactive(stderr: bool = False) -> bool:
    """Whether progress can be drawn live on that stream (a terminal, as rich decides it)."""
    from rich.console import Console

    return Console(stderr=stderr).is_terminal


def log_line(text: str, started: float | None = None, stderr: bool = False) -> None:
    """One plain progress line: ``[HH:MM:SS +elapsed s] text``."""
    elapsed = f" +{time.monotonic() - started:.0f}s" if started is not None else ""
    print(f"[{time.strftime('%H:%M:%S')}{elapsed}] {text}", file=sys.stderr if stderr else sys.stdout, flush=True)


@contextmanager
def status(text: str, stderr: bool = False) -> Iterator[Callable[[str], None]]:
    """A step reporter: ``with status("evaluating") as update: update("step 2")``.

    On a terminal a spinner shows the current step; elsewhere each step is a log line."""
    if interactive(stderr):
        from rich.console import Console

        with Console(stderr=stderr).status(text) as spinner:
            yield lambda step: spinner.update(step)
        return
    started = time.monotonic()
    log_line(text, started, stderr)
    yield lambda step: log_line(step, started, stderr)
    log_line("done", started, stderr)
