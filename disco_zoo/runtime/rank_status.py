"""What each rank is waiting for, readable by the launcher at any moment.

When a rank dies, its peers are blocked in a wait on it; the launcher wants to say which
message they were waiting for without waiting for them to time out. So every rank keeps
a small shared-memory record (a file mapped into memory, in the run's directory) of its
current wait on a peer: posting it costs one memory write of a few dozen bytes, no
system call, and the launcher reads the file whenever a rank fails.

Layout: byte 0 is 1 while a wait is in progress and 0 otherwise; then UTF-8
``what\\0peer\\0tag\\0`` (``what`` as in "receive from", the peer -1 for a barrier).
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WaitBoard", "Wait", "read_wait"]

SIZE = 512


@dataclass(frozen=True)
class Wait:
    """One wait on a peer: e.g. ``Wait("receive from", 1, "layer2.conv1")``."""

    what: str
    peer: int | None
    tag: str

    def describe(self) -> str:
        target = f" rank {self.peer}" if self.peer is not None else ""
        return f"{self.what}{target} (tag/layer {self.tag!r})"


class WaitBoard:
    """This rank's record of its current wait (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        with open(path, "w+b") as handle:
            handle.truncate(SIZE)
            self._map = mmap.mmap(handle.fileno(), SIZE)

    def waiting(self, what: str, peer: int | None, tag: str) -> None:
        text = f"{what}\0{-1 if peer is None else peer}\0{tag}".encode(errors="replace")[: SIZE - 2] + b"\0"
        self._map[1 : 1 + len(text)] = text
        self._map[0] = 1

    def done(self) -> None:
        self._map[0] = 0


def read_wait(path: Path) -> Wait | None:
    """The wait recorded at ``path``, or None (no file, or no wait in progress)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if len(data) < 2 or data[0] != 1:
        return None
    fields = data[1:].split(b"\0")
    if len(fields) < 3:
        return None
    what, peer, tag = (f.decode(errors="replace") for f in fields[:3])
    try:
        number = int(peer)
    except ValueError:
        return None
    return Wait(what, None if number < 0 else number, tag)
