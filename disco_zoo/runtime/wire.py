"""The torch-free core of the transport: tag ids, byte counters, bounded waits and the
errors a wait ends in.

Why separate: the lean node runner (:mod:`disco_zoo.edge`) speaks the same wire as the
torch transport (same tag ids, same counting, same waits) without importing torch, so
what both need lives here, and :mod:`disco_zoo.runtime.transport` re-exports it.
"""
from __future__ import annotations

import os
import threading
import time
import zlib
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

from disco_zoo.runtime.errors import LinkTooSlowError, PeerError
from disco_zoo.timing.links import Link

__all__ = ["MAX_TAG", "tag_id", "ByteCounter", "poll_until", "wait_until", "wait_requests", "hold_until",
           "peer_timeout", "peer_failure", "BoundedWaits"]

MAX_TAG = 32767  # the smallest MPI_TAG_UB the standard allows
YIELD_PHASE_S = 0.02  # how long poll_until yields between polls before sleeping
SLEEP_MARGIN_S = 5e-4  # wait_until stops sleeping this long before its time


def tag_id(tag: str) -> int:
    """A stable integer for a string tag (same on every rank and every run)."""
    return zlib.crc32(tag.encode()) % MAX_TAG


class ByteCounter:
    """Bytes this rank put on the wire, per (src, dst) pair and per tag.

    Only sends are counted, so summing the counters of all ranks (``merge``) counts every
    message exactly once.
    """

    def __init__(self) -> None:
        self._pairs: dict[tuple[int, int], int] = defaultdict(int)
        self._tags: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._pairs.clear()
            self._tags.clear()

    def add(self, src: int, dst: int, tag: str, nbytes: int) -> None:
        with self._lock:
            self._pairs[(src, dst)] += nbytes
            self._tags[tag] += nbytes

    def bytes_per_pair(self) -> dict[tuple[int, int], int]:
        return dict(self._pairs)

    def bytes_per_tag(self) -> dict[str, int]:
        return dict(self._tags)

    @property
    def total(self) -> int:
        return sum(self._pairs.values())

    def to_dict(self) -> dict[str, dict[str, int]]:
        """JSON form: pairs keyed ``"src->dst"``."""
        return {"pairs": {f"{s}->{d}": n for (s, d), n in self._pairs.items()}, "tags": dict(self._tags)}

    @staticmethod
    def merge(dicts: Sequence[dict[str, dict[str, int]]]) -> dict[str, dict]:
        """Sum the ``to_dict()`` of every rank into one (pairs keyed by (src, dst) tuples)."""
        pairs: dict[tuple[int, int], int] = defaultdict(int)
        tags: dict[str, int] = defaultdict(int)
        for d in dicts:
            for key, n in d["pairs"].items():
                src, dst = key.split("->")
                pairs[(int(src), int(dst))] += n
            for tag, n in d["tags"].items():
                tags[tag] += n
        return {"pairs": dict(pairs), "tags": dict(tags)}


def poll_until(test: Callable[[], bool], deadline: float) -> bool:
    """Poll ``test`` until it returns True (-> True) or ``deadline`` passes (-> False).

    For the first ``YIELD_PHASE_S`` of a wait it polls between ``sched_yield`` calls: a
    layer's message usually lands within microseconds to milliseconds, and a sleep of even
    1 ms per exchange would add ~50 ms to a ResNet-50 inference; yielding (rather than
    spinning) still lets a peer sharing this core run. Longer waits (slow links) sleep
    between polls, at most 2% of the time waited so far (capped at 1 ms): a waiting rank
    does not eat a core, and it picks a message up at most ~2% late.
    """
    start = time.monotonic()
    while not test():
        now = time.monotonic()
        if now >= deadline:
            return test()
        if now - start < YIELD_PHASE_S:
            os.sched_yield()
        else:
            time.sleep(min(1e-3, 0.02 * (now - start)))
    return True


def wait_until(when: float) -> None:
    """Return at monotonic time ``when``: sleep while it is far, then yield until it
    comes (a sleep in a VM wakes tens to hundreds of microseconds late)."""
    while (left := when - time.monotonic()) > 0:
        if left > SLEEP_MARGIN_S:
            time.sleep(left - SLEEP_MARGIN_S)
        else:
            os.sched_yield()




def peer_timeout(rank: int, timeout_s: float, what: str, peer: int, tag: str) -> PeerError:
    """The error of a wait on ``peer`` that reached the timeout."""
    return PeerError(f"rank {rank}: timed out after {timeout_s:g} s waiting to {what} rank {peer} "
                     f"(tag/layer {tag!r}); rank {peer} is dead or hung", rank=peer, tag=tag)


def peer_failure(rank: int, err: BaseException, what: str, peer: int, tag: str) -> PeerError:
    """The error of a backend call on ``peer`` that failed (its first line kept)."""
    return PeerError(f"rank {rank}: failed to {what} rank {peer} (tag/layer {tag!r}): {str(err).splitlines()[0]}",
                     rank=peer, tag=tag)


def wait_requests(backend: Any, requests: Sequence[Any], deadline: float, board: Any, rank: int, timeout_s: float,
                  what: str, peer: int, tag: str) -> None:
    """Wait for every backend request of one message until ``deadline``, telling the wait
    board (if any) what this rank waits on; a failure or a timeout names the peer."""
    if board is not None:
        board.waiting(what, peer, tag)
    for request in requests:
        try:
            done = backend.wait(request, deadline)
        except Exception as err:
            raise peer_failure(rank, err, what, peer, tag) from err
        if not done:
            raise peer_timeout(rank, timeout_s, what, peer, tag)
    if board is not None:
        board.done()


def hold_until(rank: int, links: Mapping[tuple[int, int], Link], timeout_s: float, when: float, deadline: float, pair: tuple[int, int],
               tag: str, nbytes: int) -> None:
    """Hold a message until its emulated delivery time, which must come by the wait's
    deadline: a stamp past it fails now (waiting would only end in a timeout, or, for a
    link slow enough, never)."""
    if when > deadline:
        link = links[pair]
        speed = f"{link.bandwidth_bps:g} bit/s" if link.bandwidth_bps else "unlimited bandwidth"
        raise LinkTooSlowError(
            f"rank {rank}: the emulated link {pair[0]}->{pair[1]} ({speed}, {link.latency_s:g} s latency) "
            f"delivers {tag!r} ({nbytes:,} bytes) {when - time.monotonic():.3g} s from now, past the timeout "
            f"of {timeout_s:g} s: the link is too slow for the timeout; raise the timeout or give the "
            "link more bandwidth or less latency",
            rank=pair[1] if pair[0] == rank else pair[0], tag=tag,
        )
    wait_until(when)


class BoundedWaits:
    """The waits of a transport (torch's and the lean runner's share them): the class sets
    ``backend``, ``board``, ``rank``, ``timeout_s`` and ``links``."""

    backend: Any
    board: Any
    rank: int
    timeout_s: float
    links: Mapping[tuple[int, int], Link]

    def _wait_all(self, requests: Sequence[Any], what: str, peer: int, tag: str, deadline: float) -> None:
        """Wait for a message's requests (its payload, and its stamp on an emulated link)
        until ``deadline``; a failure or a timeout is a PeerError naming the peer. On
        failure the board keeps the wait: it is what the launcher reports."""
        wait_requests(self.backend, requests, deadline, self.board, self.rank, self.timeout_s, what, peer, tag)

    def _hold_until(self, when: float, deadline: float, pair: tuple[int, int], tag: str, nbytes: int) -> None:
        hold_until(self.rank, self.links, self.timeout_s, when, deadline, pair, tag, nbytes)

    def _wrap(self, err: BaseException, what: str, peer: int, tag: str) -> PeerError:
        return peer_failure(self.rank, err, what, peer, tag)
