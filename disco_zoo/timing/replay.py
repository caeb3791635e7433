"""The one model of time: replay per-device programs over links.

Why one engine: a DISCO run measured over an emulated or shaped link, and an EdgeFlow
plan over a device profile, are both "devices compute, then message each other"; the
same replay predicts both, so a prediction that misses tells us the runtime did
something we did not plan (extra copies, lost overlap), not that two models disagree.

A :class:`RankProgram` is one device's inference in program order: compute gaps and
communication events. DISCO programs are *measured* (the runtime code run with no wire,
:mod:`disco_zoo.runtime.profiling`); EdgeFlow programs are *derived* from a plan's units
and the profile's compute rates (:mod:`disco_zoo.planner.programs`).

:func:`replay` plays every program against the link model the emulator implements
(:mod:`disco_zoo.timing.links`): every ordered pair is a FIFO link; a message of n bytes
posted at t starts when the link is free, takes ``n * 8 / bandwidth`` and arrives
``latency`` later. A device waiting for a message stalls until it arrives; a send
completes when it is delivered. Each message also pays a :class:`MessageCost`, the
software cost of one message through the transport: it arrives that much later, and
posting it takes the sender's own time. The prediction is the slowest device's
finishing time. docs/time-model.md writes the model out.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator

from disco_zoo.errors import DiscoZooError
from disco_zoo.timing.links import Link, Links

__all__ = [
    "Event", "RankProgram", "ComputeProfile", "MessageCost", "Segment", "Replay", "median_program", "replay",
    "predict_latency",
]

EVENT_KINDS = ("send", "recv", "send_done", "compute")


@dataclass(frozen=True)
class Event:
    """One step of a program: ``kind`` is 'send', 'recv' (waiting for a message),
    'send_done' (waiting for a send to complete) or 'compute' (a mark that only ends a
    compute segment, so a timeline can name it); ``gap_s`` is the compute time since the
    previous event; ``nbytes`` is on the wire (sends only); ``label`` names the compute
    in the gap (e.g. the layer an EdgeFlow unit computes)."""

    kind: str
    peer: int
    tag: Hashable
    gap_s: float
    nbytes: int = 0
    label: str = ""


@dataclass
class RankProgram:
    """A device's inference as compute gaps and communication events, in program order."""

    rank: int
    events: list[Event] = field(default_factory=list)
    tail_s: float = 0.0  # compute after the last event

    @property
    def compute_s(self) -> float:
        return sum(e.gap_s for e in self.events) + self.tail_s

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a rank profiled inside a launch returns it to the parent)."""
        return {"rank": self.rank, "tail_s": self.tail_s,
                "events": [[e.kind, e.peer, e.tag, e.gap_s, e.nbytes, *([e.label] if e.label else [])]
                           for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RankProgram":
        return cls(int(data["rank"]), [Event(*e) for e in data["events"]], float(data["tail_s"]))


@dataclass
class ComputeProfile:
    """Every device's program; ``compute_s[k]`` is device k's compute alone."""

    programs: list[RankProgram]

    @property
    def compute_s(self) -> list[float]:
        return [p.compute_s for p in self.programs]

    @property
    def bytes_per_pair(self) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = defaultdict(int)
        for p in self.programs:
            for e in p.events:
                if e.kind == "send":
                    out[(p.rank, e.peer)] += e.nbytes
        return dict(out)


@dataclass(frozen=True)
class MessageCost:
    """What one message costs in software beyond the link: it arrives ``fixed_s`` +
    ``per_byte_s`` x bytes late, and posting it takes the sender ``send_fixed_s`` +
    ``send_per_byte_s`` x bytes of its own time (the backend's calls; on small inputs,
    with ~100 messages per inference of a few ms, these add up to tens of percent).
    Measured by :func:`disco_zoo.runtime.calibrate.measure_message_cost`."""

    fixed_s: float = 0.0
    per_byte_s: float = 0.0
    send_fixed_s: float = 0.0
    send_per_byte_s: float = 0.0

    def __call__(self, nbytes: int) -> float:
        return self.fixed_s + self.per_byte_s * nbytes

    def sender(self, nbytes: int) -> float:
        return self.send_fixed_s + self.send_per_byte_s * nbytes


@dataclass(frozen=True)
class Segment:
    """A stretch of compute on one device in the replay: [start_s, end_s), named."""

    start_s: float
    end_s: float
    label: str


@dataclass
class Replay:
    """What the replay found: when each device finished, and its compute segments."""

    finish_s: list[float]
    segments: list[list[Segment]]

    @property
    def latency_s(self) -> float:
        return max(self.finish_s)


def median_program(runs: list[RankProgram]) -> RankProgram:
    """Event-wise median of repeated runs of one rank (the event sequence is fixed)."""
    first = runs[0]
    if any([(e.kind, e.peer, e.tag) for e in r.events] != [(e.kind, e.peer, e.tag) for e in first.events] for r in runs):
        raise DiscoZooError(f"rank {first.rank}'s communication differs between repeats; the model is not static")
    events = [
        Event(e.kind, e.peer, e.tag, statistics.median(r.events[i].gap_s for r in runs), e.nbytes, e.label)
        for i, e in enumerate(first.events)
    ]
    return RankProgram(first.rank, events, statistics.median(r.tail_s for r in runs))


def _link_map(links: Links, nodes: int) -> dict[tuple[int, int], Link]:
    if isinstance(links, Link) or links is None:
        profile = links or Link()
        return {(s, d): profile for s in range(nodes) for d in range(nodes) if s != d}
    return {pair: links.get(pair, Link()) for pair in ((s, d) for s in range(nodes) for d in range(nodes) if s != d)}


def _occurrences(events: list[Event], kind: str) -> Iterator[tuple[int, int, int]]:
    """(event index, peer, n-th message with this (peer, tag) so far) for ``kind`` events."""
    seen: dict[tuple[int, Hashable], int] = defaultdict(int)
    for i, e in enumerate(events):
        if e.kind == kind:
            yield i, e.peer, seen[(e.peer, e.tag)]
            seen[(e.peer, e.tag)] += 1


def replay(profile: ComputeProfile, links: Links = None, message_cost: float | MessageCost = 0.0,
           trace: bool = False) -> Replay:
    """Replay every program over ``links`` (see module doc); ``message_cost`` is seconds
    per message or a :class:`MessageCost`. With ``trace``, each device's compute segments
    (start, end, label) are recorded too, e.g. for a Gantt chart."""
    programs = profile.programs
    cost = message_cost if isinstance(message_cost, MessageCost) else MessageCost(message_cost)
    nodes = len(programs)
    link = _link_map(links, nodes)
    # match each send with the receive it feeds: (src, dst, tag, n-th) -> delivery time
    recv_key = {}
    for p in programs:
        for i, peer, nth in _occurrences(p.events, "recv"):
            recv_key[(p.rank, i)] = (peer, p.rank, p.events[i].tag, nth)
    send_key = {}
    for p in programs:
        for i, peer, nth in _occurrences(p.events, "send"):
            send_key[(p.rank, i)] = (p.rank, peer, p.events[i].tag, nth)
    delivered: dict[tuple[int, int, Hashable, int], float] = {}
    free_at: dict[tuple[int, int], float] = defaultdict(float)
    clock, position = [0.0] * nodes, [0] * nodes
    segments: list[list[Segment]] = [[] for _ in range(nodes)]
    send_done_queue: dict[int, dict[tuple[int, Hashable], list[float]]] = {p.rank: defaultdict(list) for p in programs}
    while True:
        progressed = False
        for p in programs:
            k = p.rank
            while position[k] < len(p.events):
                e = p.events[position[k]]
                at = clock[k] + e.gap_s
                if e.kind == "send":
                    pair = link[(k, e.peer)]
                    begin = max(at, free_at[(k, e.peer)])
                    free_at[(k, e.peer)] = begin + pair.transfer_time(e.nbytes)
                    arrival = free_at[(k, e.peer)] + pair.latency_s + cost(e.nbytes)
                    delivered[send_key[(k, position[k])]] = arrival
                    send_done_queue[k][(e.peer, e.tag)].append(arrival)
                    at += cost.sender(e.nbytes)  # posting it is the sender's time
                elif e.kind == "recv":
                    key = recv_key[(k, position[k])]
                    if key not in delivered:
                        break  # the sender has not got there yet: try another rank
                    at = max(at, delivered[key])
                elif e.kind == "send_done":
                    queue = send_done_queue[k][(e.peer, e.tag)]
                    if not queue:
                        raise DiscoZooError(f"rank {k} waits for a send to {e.peer} it never posted")
                    at = max(at, queue.pop(0))
                elif e.kind != "compute":
                    raise DiscoZooError(f"rank {k}: unknown program event {e.kind!r}; expected one of {EVENT_KINDS}")
                if trace and (e.gap_s > 0 or e.kind == "compute"):
                    segments[k].append(Segment(clock[k], clock[k] + e.gap_s, e.label or f"{e.kind} {e.tag}"))
                clock[k] = at
                position[k] += 1
                progressed = True
        if all(position[p.rank] == len(p.events) for p in programs):
            break
        if not progressed:
            stuck = [p.rank for p in programs if position[p.rank] < len(p.events)]
            raise DiscoZooError(f"the ranks' programs deadlock (ranks {stuck} wait for messages never sent)")
    if trace:
        for p in programs:
            if p.tail_s > 0:
                segments[p.rank].append(Segment(clock[p.rank], clock[p.rank] + p.tail_s, "tail"))
    return Replay([clock[p.rank] + p.tail_s for p in programs], segments)


def predict_latency(profile: ComputeProfile, links: Links = None, message_cost: float | MessageCost = 0.0) -> float:
    """Predicted seconds per inference (slowest device) over ``links``: :func:`replay`'s latency."""
    return replay(profile, links, message_cost).latency_s
