"""Runtime errors: a failed peer must surface as one message naming rank and tag."""
from __future__ import annotations

import signal

from disco_zoo.errors import DiscoZooError


class PeerError(DiscoZooError):
    """A peer died, hung or failed; the message names the rank(s) and the tag/layer.

    ``rank`` is the rank that failed (or the first one known to), ``tag`` the layer or
    message tag involved when known.
    """

    def __init__(self, message: str, rank: int | None = None, tag: str | None = None) -> None:
        super().__init__(message)
        self.rank = rank
        self.tag = tag


class RendezvousError(DiscoZooError):
    """The backend could not set up its process group (e.g. the port was taken).

    The launcher retries on a fresh port when it sees this.
    """


class LinkTooSlowError(PeerError):
    """An emulated link would deliver a message after the wait's deadline.

    Waiting would only end in a timeout later (or, unbounded, never), so the wait fails at
    once and says which link, message and timeout are at odds.
    """


class Interrupted(BaseException):
    """SIGTERM or SIGHUP reached a launcher: raised like KeyboardInterrupt so that every
    ``finally`` on the way out stops the ranks and removes the run's files.

    A BaseException, so ``except Exception`` in user code cannot swallow it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
