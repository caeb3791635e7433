"""Link emulation: per ordered pair bandwidth + latency, applied on the sender.

Model (documented in CONTRACTS.md): every ordered pair (src, dst) is its own FIFO link.
A message of ``n`` bytes posted at time ``t`` starts when the link is free,
``start = max(t, free_at)``, occupies it for ``n * 8 / bandwidth`` seconds and is
delivered ``latency`` seconds after that. Overlapping isends to the same peer therefore
queue behind each other (bandwidth is shared), while their latencies overlap; sends to
different peers do not interact. The *sender* holds the message back and hands it to the
real backend at the delivery time, so the receiver sees it no earlier than the emulated
link would deliver it, and a blocking send returns at the delivery time.
"""
from __future__ import annotations

import heapq
import itertools
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable

from disco_zoo.errors import DiscoZooError

__all__ = ["LinkProfile", "LinkEmulator", "parse_bandwidth", "parse_latency"]

_BANDWIDTH_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
_LATENCY_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
SWITCH_INTERVAL_S = 1e-4  # GIL hand-over bound while emulating links (see LinkEmulator)
_NUMBER = r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*"


def parse_bandwidth(text: str | float | int) -> float:
    """'100mbit' -> 1e8 bits/s (tc's spelling: bit, kbit, mbit, gbit; decimal units)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(_NUMBER + r"([a-z]*)\s*", text.strip().lower())
        if not match or match.group(2) not in _BANDWIDTH_UNITS:
            raise DiscoZooError(f"bad bandwidth {text!r}: use e.g. '10mbit', '1gbit', '500kbit'")
        value = float(match.group(1)) * _BANDWIDTH_UNITS[match.group(2)]
    if value <= 0:
        raise DiscoZooError(f"bandwidth must be positive, got {text!r}")
    return value


def parse_latency(text: str | float | int) -> float:
    """'2ms' -> 0.002 s; a bare number is seconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(_NUMBER + r"([a-z]*)\s*", text.strip().lower())
        if not match or match.group(2) not in (*_LATENCY_UNITS, ""):
            raise DiscoZooError(f"bad latency {text!r}: use e.g. '2ms', '500us', '0.01s'")
        value = float(match.group(1)) * _LATENCY_UNITS.get(match.group(2) or "s", 1.0)
    if value < 0:
        raise DiscoZooError(f"latency must be >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class LinkProfile:
    """One emulated link: ``bandwidth_bps`` (None = unlimited) and one-way ``latency_s``."""

    bandwidth_bps: float | None = None
    latency_s: float = 0.0

    @classmethod
    def parse(cls, bandwidth: str | float | None = None, latency: str | float | None = None) -> "LinkProfile":
        bps = parse_bandwidth(bandwidth) if bandwidth not in (None, "") else None
        return cls(bps, parse_latency(latency) if latency not in (None, "") else 0.0)

    def transfer_time(self, nbytes: int) -> float:
        """Seconds on the wire for ``nbytes`` (serialisation only, no latency)."""
        return nbytes * 8.0 / self.bandwidth_bps if self.bandwidth_bps else 0.0

    def to_dict(self) -> dict[str, float | None]:
        return {"bandwidth_bps": self.bandwidth_bps, "latency_s": self.latency_s}

    @property
    def is_ideal(self) -> bool:
        return not self.bandwidth_bps and not self.latency_s


class LinkEmulator:
    """Schedules this rank's outgoing messages on its emulated links.

    ``schedule(dst, nbytes, post)`` returns the delivery time and arranges for ``post()``
    (which hands the message to the real backend) to run then, on a daemon thread.
    """

    def __init__(self, profiles: dict[int, LinkProfile]) -> None:
        # The thread that hands messages over needs the GIL at each delivery time. While
        # the main thread polls for a receive it drops and retakes the GIL in a tight loop,
        # and CPython only forces a hand-over after the switch interval (5 ms by default):
        # up to 5 ms late per message, ~40 ms per ResNet-50 inference at 1 Gbit/s.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
        self.profiles = profiles  # dst -> profile of the link (this rank -> dst)
        self._free_at: dict[int, float] = {}
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def delivery_time(self, dst: int, nbytes: int, now: float) -> float:
        profile = self.profiles.get(dst, LinkProfile())
        with self._cond:
            start = max(now, self._free_at.get(dst, 0.0))
            self._free_at[dst] = start + profile.transfer_time(nbytes)
            return self._free_at[dst] + profile.latency_s

    def schedule(self, dst: int, nbytes: int, post: Callable[[], None]) -> float:
        deliver_at = self.delivery_time(dst, nbytes, time.monotonic())
        with self._cond:
            heapq.heappush(self._queue, (deliver_at, next(self._seq), post))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="link-emulator", daemon=True)
                self._thread.start()
            self._cond.notify()
        return deliver_at

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                _, _, post = heapq.heappop(self._queue)
            post()
