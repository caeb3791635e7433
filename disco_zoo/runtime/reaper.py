"""The last word on a launch: kills what a dead launcher left and removes its files.

Started once per launcher process by :mod:`disco_zoo.runtime.lifetime`, run by path
with ``python -I -S`` (standard library only, nothing imported from the package, so it
starts in milliseconds and cannot be broken by the environment). It lives in its own
session, so the signal that ends the launcher's process group does not end it, and
reads JSON lines on stdin that register and release what a run owns:

    {"op": "watch" | "forget", "groups": [pgid, ...], "paths": [dir, ...], "markers": [text, ...]}

When stdin reaches end of file (the launcher exited, or died, even by SIGKILL, and the
kernel closed the pipe) or its parent changes, it SIGKILLs
every registered process group and every process whose command line contains a
registered marker (the run's directory: mpiexec, its proxies and every rank name their
spec file), then removes the registered directories, and exits.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys

CHECK_PARENT_S = 0.5


def _kill_marked(markers: set[str]) -> None:
    """SIGKILL every process whose command line contains one of ``markers``."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmdline for marker in markers):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def clean_up(groups: set[int], paths: set[str], markers: set[str]) -> None:
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
    if markers:
        _kill_marked(markers)
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parent = os.getppid()
    owned: dict[str, set] = {"groups": set(), "paths": set(), "markers": set()}
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], CHECK_PARENT_S)
        if ready:
            chunk = os.read(0, 1 << 16)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                message = json.loads(line)
                for key, values in owned.items():
                    change = values.update if message["op"] == "watch" else values.difference_update
                    change(message.get(key, []))
        if os.getppid() != parent:
            break
    clean_up(owned["groups"], owned["paths"], owned["markers"])


if __name__ == "__main__":
    sys.exit(main())
