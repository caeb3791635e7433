"""User-facing errors. The CLI prints these as one clear message, never a traceback."""
from __future__ import annotations


class DiscoZooError(Exception):
    """Base for errors caused by bad input (names, shapes, files, plans, peers).

    The message must say what was wrong and how to fix it.
    """
