"""Option checks every command runs before it starts any work.

Why a module of its own: a bad option must fail at once with one line naming it, not
after minutes of accuracy runs (``eval --bandwidth fast``) or at the very end
(``--out`` to a folder nobody may write), and every command should say it alike.
"""
from __future__ import annotations

import math
from pathlib import Path

from disco_zoo.errors import DiscoZooError
from disco_zoo.timing.links import Link

__all__ = ["check_timeout", "parse_links", "check_output_path", "check_not_published", "check_nodes"]


def check_timeout(seconds: float, option: str = "--timeout") -> float:
    """A finite, positive number of seconds to wait on a peer."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
        raise DiscoZooError(f"{option} must be a positive number of seconds, got {seconds!r}")
    return float(seconds)


def parse_links(text: str, option: str = "--bandwidth") -> list[tuple[str, Link]]:
    """'10mbit,100mbit' -> [(text, Link), ...]; every entry checked now."""
    items = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return [(item, Link.parse(item)) for item in items]
    except DiscoZooError as err:
        raise DiscoZooError(f"{option}: {err}") from None


def check_output_path(path: Path, option: str) -> Path:
    """A file path the command will be able to write at its end (its folder exists or
    can be made, and may be written); nothing is created here."""
    path = Path(path)
    if path.is_dir():
        raise DiscoZooError(f"{option} {path} is a folder; give a file path")
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not _can_create_in(existing):
        raise DiscoZooError(f"{option} {path}: {existing} is not a writable folder; choose another path")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be made in ``folder`` (permission bits say yes for root
    everywhere, even in /proc): a probe file is created and removed at once."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".disco-zoo-probe-"):
            return True
    except OSError:
        return False


def check_not_published(folder: Path, force: bool, option: str = "--out") -> Path:
    """A model folder the command may (re)write: never a published one (inside
    ``$DISCO_ZOO_HUB`` or the clone's ``hub/``, loaded by name, with its card) unless
    ``--force`` says so. Checked before training starts, not after."""
    from disco_zoo.hub import is_published_folder

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DiscoZooError(f"{option} {folder} is a file; give a folder path")
    if is_published_folder(folder) and not force:
        raise DiscoZooError(f"{option} {folder} is a published model folder; pass --force to replace it "
                            "(its weights and card), or write elsewhere with --out DIR")
    check_output_path(folder / ".probe", option)
    return folder


def check_nodes(label: str, have: int, nodes: int | None) -> int:
    """``--nodes`` must agree with the model's own split; the model's when not given."""
    if nodes is not None and nodes != have:
        raise DiscoZooError(f"{label} is split over {have} nodes; drop --nodes or pass --nodes {have}")
    return have
