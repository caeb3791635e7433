"""Link emulation: per ordered pair bandwidth + latency, scheduled by the sender, held by the receiver.

Model (documented in CONTRACTS.md): every ordered pair (src, dst) is its own FIFO link.
A message of ``n`` bytes posted at time ``t`` starts when the link is free,
``start = max(t, free_at)``, occupies it for ``n * 8 / bandwidth`` seconds and is
delivered ``latency`` seconds after that. Overlapping isends to the same peer therefore
queue behind each other (bandwidth is shared), while their latencies overlap; sends to
different peers do not interact. The sender posts the message at once and its delivery
time (the stamp) right after it; the receiver does not see the message before the stamp,
and a send completes no earlier than it either (see :class:`LinkEmulator`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from disco_zoo.errors import DiscoZooError

__all__ = ["LinkProfile", "LinkEmulator", "parse_bandwidth", "parse_latency"]

_BANDWIDTH_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}
_LATENCY_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
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
    """This rank's side of the emulated links: when each outgoing message is delivered,
    and which incoming links are emulated (their messages come with a stamp).

    The sender posts a message to the real backend at once, then its delivery time on the
    emulated link (:meth:`delivery_time`, the stamp); the receiver holds the message until
    then. So no
    extra thread wakes up while a rank computes: an earlier design handed messages over
    from a timer thread, and on a machine whose cores all compute, its ~60 wake-ups per
    ResNet-50 inference at 1 Gbit/s preempted the very compute the links were emulated
    for (5-20% slower than the same compute with no wire). Stamps are CLOCK_MONOTONIC,
    which every process on one machine shares: link emulation is for ranks on one machine
    (across machines, the real network is the link).
    """

    def __init__(self, rank: int, links: dict[tuple[int, int], LinkProfile]) -> None:
        emulated = {pair: p for pair, p in links.items() if not p.is_ideal}
        self.profiles = {d: p for (s, d), p in emulated.items() if s == rank}  # dst -> link rank -> dst
        self.sources = {s for (s, d) in emulated if d == rank}  # peers whose links to this rank are emulated
        self._free_at: dict[int, float] = {}

    def __bool__(self) -> bool:
        return bool(self.profiles or self.sources)

    def delivery_time(self, dst: int, nbytes: int, now: float) -> float:
        """Monotonic time at which ``nbytes`` posted at ``now`` reach ``dst`` (FIFO link)."""
        profile = self.profiles[dst]
        start = max(now, self._free_at.get(dst, 0.0))
        self._free_at[dst] = start + profile.transfer_time(nbytes)
        return self._free_at[dst] + profile.latency_s
