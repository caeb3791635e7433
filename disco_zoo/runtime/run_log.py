"""Where a failed run's details go: one log file per failure, outside the run's temp dir.

The user's terminal gets one summary line; the ranks' tracebacks and output go here, so
the line can name the file. The directory is ``$DISCO_ZOO_LOG_DIR``, else
``$XDG_CACHE_HOME/disco-zoo/logs``, else ``~/.cache/disco-zoo/logs``; the newest
``KEEP`` logs are kept. Logs may hold tensors' shapes, paths and user data from
tracebacks, so they are readable by their owner only.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["log_dir", "write_log", "LOG_DIR_ENV"]

LOG_DIR_ENV = "DISCO_ZOO_LOG_DIR"
KEEP = 50
PREFIX = "run-"


def log_dir() -> Path:
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "disco-zoo" / "logs"


def _prune(folder: Path) -> None:
    logs = sorted(folder.glob(f"{PREFIX}*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEEP]:
        try:
            old.unlink()
        except OSError:
            pass


def write_log(text: str) -> tuple[Path | None, str]:
    """Write ``text`` as a new log; (its path, "") or (None, why it could not be written)."""
    folder = log_dir()
    name = f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _prune(folder)
    except OSError as err:
        return None, f"{folder}: {err.strerror or err}"
    return folder / name, ""
