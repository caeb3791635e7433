"""Link emulation: per ordered pair bandwidth + latency, scheduled by the sender, held by the receiver.

The link type is :class:`disco_zoo.timing.links.Link`. Model (docs/time-model.md):
every ordered pair (src, dst) is its own FIFO link. A message of ``n`` bytes posted at time ``t`` starts when the link is free,
``start = max(t, free_at)``, occupies it for ``n * 8 / bandwidth`` seconds and is
delivered ``latency`` seconds after that. Overlapping isends to the same peer therefore
queue behind each other (bandwidth is shared), while their latencies overlap; sends to
different peers do not interact. The sender posts the message at once and its delivery
time (the stamp) right after it; the receiver does not see the message before the stamp,
and a send completes no earlier than it either (see :class:`LinkEmulator`).
"""
from __future__ import annotations

from disco_zoo.timing.links import Link

__all__ = ["LinkEmulator"]


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

    def __init__(self, rank: int, links: dict[tuple[int, int], Link]) -> None:
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
