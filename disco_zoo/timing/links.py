"""The one link type: what a message between two devices costs on the wire.

Why one type: the runtime's link emulation, the DISCO latency prediction and the
EdgeFlow planner all describe a link by the same two numbers, so a device profile's
link and an emulated one are the same object and mean the same thing. The model
(docs/time-model.md): every ordered pair is its own FIFO link; ``n`` bytes occupy it
for ``n * 8 / bandwidth_bps`` seconds and arrive ``latency_s`` after that.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from disco_zoo.errors import DiscoZooError

__all__ = ["Link", "Links", "parse_bandwidth", "parse_latency"]

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
    if not math.isfinite(value) or value <= 0:
        raise DiscoZooError(f"bandwidth must be a positive finite rate, got {text!r}: use e.g. '10mbit', '1gbit'")
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
    if not math.isfinite(value) or value < 0:
        raise DiscoZooError(f"latency must be a finite time >= 0, got {text!r}: use e.g. '2ms', '500us'")
    return value


@dataclass(frozen=True)
class Link:
    """One link: ``bandwidth_bps`` (None = unlimited) and one-way ``latency_s``.

    An infinite bandwidth is stored as None, so "unlimited" has one spelling."""

    bandwidth_bps: float | None = None
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if self.bandwidth_bps is not None and math.isinf(self.bandwidth_bps):
            object.__setattr__(self, "bandwidth_bps", None)

    @classmethod
    def parse(cls, bandwidth: str | float | None = None, latency: str | float | None = None) -> "Link":
        """From user text, e.g. ``Link.parse("100mbit", "2ms")``; empty means unlimited / none."""
        bps = parse_bandwidth(bandwidth) if bandwidth not in (None, "") else None
        return cls(bps, parse_latency(latency) if latency not in (None, "") else 0.0)

    def transfer_time(self, nbytes: float) -> float:
        """Seconds on the wire for ``nbytes`` (serialisation only, no latency)."""
        return nbytes * 8.0 / self.bandwidth_bps if self.bandwidth_bps else 0.0

    def seconds(self, nbytes: float) -> float:
        """Time for ``nbytes`` to arrive on an idle link: serialisation plus latency (0 bytes: no message)."""
        return self.transfer_time(nbytes) + self.latency_s if nbytes > 0 else 0.0

    @property
    def is_ideal(self) -> bool:
        return not self.bandwidth_bps and not self.latency_s

    def to_dict(self) -> dict[str, float | None]:
        return {"bandwidth_bps": self.bandwidth_bps, "latency_s": self.latency_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Link":
        return cls(data.get("bandwidth_bps"), float(data.get("latency_s", 0.0)))


Links = Link | dict[tuple[int, int], Link] | None  # one link for every pair, a per-pair map, or ideal
