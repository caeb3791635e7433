"""Latency cost model for a DISCO model on N ranks: measured compute, modelled links.

Why: a latency measured over an emulated or shaped link should be *predictable* from
two things we know separately, each rank's compute and the bytes the accounting says
move, and a prediction that misses tells us the runtime does something we did not plan
(extra copies, serialisation, lost overlap).

1. :func:`run_without_wire` runs a rank's part of the model against a
   :class:`NullBackend` (sends vanish, receives return noise at once) and records the
   rank's program: the compute time between its communication calls, and every message
   it posts (peer, tag, bytes on the wire) and waits for. The runtime code is the real
   one (``build_node_model``, ``scatter_input``, :class:`Transport`); only the wire is
   missing, so the trace is "compute alone". Inside a launch
   (:mod:`disco_zoo.runtime.timing`) every rank does this at once, between real
   inferences, so the profile shares the real run's machine and moment;
   :func:`profile_compute` does it one rank after another in this process.
2. :func:`predict_latency` replays those programs against a link model, the same one
   the emulator implements (``disco_zoo.runtime.link``): every ordered pair is a FIFO
   link; a message of n bytes posted at t starts when the link is free, takes
   ``n * 8 / bandwidth`` and arrives ``latency`` later. A rank waiting for a message
   stalls until it arrives; a send completes when it is delivered. Each message also
   pays a :class:`MessageCost`, the software cost of one message through the transport
   (and, on an emulated link, its stamp and the timed wait that holds it until its
   delivery time): it arrives that much later, and posting it takes the sender's own
   time. :func:`measure_message_cost` measures both separately with ping-pongs of 1 KB
   and 1 MiB over an emulated link (each a fixed part and a per-byte part). The
   prediction is the slowest rank's finishing time.
"""
from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.link import LinkProfile

if TYPE_CHECKING:
    from disco_zoo.runtime.transport import Transport

__all__ = [
    "Event", "RankProgram", "ComputeProfile", "NullBackend", "profile_compute", "run_without_wire", "median_program",
    "predict_latency", "measure_message_cost", "MessageCost",
]

Links = LinkProfile | dict[tuple[int, int], LinkProfile] | None


@dataclass(frozen=True)
class Event:
    """One communication call of a rank: ``kind`` is 'send', 'recv' (waiting for a
    message) or 'send_done' (waiting for a send to complete); ``gap_s`` is the compute
    time since the previous event; ``nbytes`` is on the wire (sends only)."""

    kind: str
    peer: int
    tag: int
    gap_s: float
    nbytes: int = 0


@dataclass
class RankProgram:
    """A rank's inference as compute gaps and communication events, in program order."""

    rank: int
    events: list[Event] = field(default_factory=list)
    tail_s: float = 0.0  # compute after the last event

    @property
    def compute_s(self) -> float:
        return sum(e.gap_s for e in self.events) + self.tail_s

    def to_dict(self) -> dict[str, Any]:
        """JSON form (a rank profiled inside a launch returns it to the parent)."""
        return {"rank": self.rank, "tail_s": self.tail_s,
                "events": [[e.kind, e.peer, e.tag, e.gap_s, e.nbytes] for e in self.events]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RankProgram":
        return cls(int(data["rank"]), [Event(*e) for e in data["events"]], float(data["tail_s"]))


@dataclass
class ComputeProfile:
    """Every rank's program; ``compute_s[k]`` is rank k's compute alone."""

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


class _Request:
    def __init__(self, kind: str, peer: int, tag: int, nbytes: int = 0) -> None:
        self.kind, self.peer, self.tag, self.nbytes = kind, peer, tag, nbytes


_NOISE: dict[torch.dtype, torch.Tensor] = {}  # per dtype, standard normal values, grown as needed


def _noise(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """``numel`` standard normal values of ``dtype``, made once per process and reused,
    so that filling a buffer costs one copy (the first, untimed run makes them)."""
    pool = _NOISE.get(dtype)
    if pool is None or pool.numel() < numel:
        pool = _NOISE[dtype] = torch.randn(max(numel, 1 << 16), generator=torch.Generator().manual_seed(0)).to(dtype)
    return pool[:numel]


class NullBackend:
    """A backend with no wire: sends complete at once, receives are noise. It logs each
    call with a timestamp so the compute between them can be measured.

    Why noise, not zeros: the same conv costs ~3% less time on constant data than on real
    data here (measured on ResNet-50, image vs zeros, one thread), and a rank that
    receives its input image would compute the whole model on constants."""

    name = "null"

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.log: list[tuple[str, int, int, int, float]] = []  # (kind, peer, tag, nbytes, time)

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> _Request:
        self.log.append(("send", dst, tag, buf.numel() * buf.element_size(), time.perf_counter()))
        return _Request("send_done", dst, tag)

    def post_recv(self, buf: torch.Tensor, src: int, tag: int) -> _Request:
        if buf.is_floating_point():
            buf.copy_(_noise(buf.numel(), buf.dtype).view(buf.shape))
        else:
            buf.zero_()
        return _Request("recv", src, tag)

    def wait(self, request: _Request | None, deadline: float) -> bool:
        if request is not None:
            self.log.append((request.kind, request.peer, request.tag, 0, time.perf_counter()))
        return True

    def post_barrier(self) -> None:
        return None

    def close(self) -> None:
        pass


def _program(rank: int, log: list[tuple[str, int, int, int, float]], start: float, end: float) -> RankProgram:
    program, last = RankProgram(rank), start
    for kind, peer, tag, nbytes, at in log:
        program.events.append(Event(kind, peer, tag, at - last, nbytes))
        last = at
    program.tail_s = end - last
    return program


def median_program(runs: list[RankProgram]) -> RankProgram:
    """Event-wise median of repeated runs of one rank (the event sequence is fixed)."""
    first = runs[0]
    if any([(e.kind, e.peer, e.tag) for e in r.events] != [(e.kind, e.peer, e.tag) for e in first.events] for r in runs):
        raise DiscoZooError(f"rank {first.rank}'s communication differs between repeats; the model is not static")
    events = [
        Event(e.kind, e.peer, e.tag, statistics.median(r.events[i].gap_s for r in runs), e.nbytes)
        for i, e in enumerate(first.events)
    ]
    return RankProgram(first.rank, events, statistics.median(r.tail_s for r in runs))


def run_without_wire(transport: Transport, forward: Callable[[], Any]) -> RankProgram:
    """Run ``forward`` (this rank's inference through ``transport``) with no wire under
    it: a NullBackend and no link emulation for the duration, restored afterwards. The
    result is the rank's program, i.e. its compute alone. Inside a launch every rank can
    do this at the same time as the others, so the profile sees the same contention for
    cores and memory as the real run next to it."""
    null = NullBackend(transport.rank, transport.world_size)
    with transport.over(null):
        start = time.perf_counter()
        forward()
        end = time.perf_counter()
    return _program(transport.rank, list(null.log), start, end)


def profile_compute(
    folder: Path | str,
    input_shape: list[int] | tuple[int, ...],
    repeats: int = 3,
    warmup: int = 1,
    wire_dtype: str = "fp32",
    threads: int = 1,
) -> ComputeProfile:
    """Measure every rank's program for the DISCO model in ``folder``, one rank after
    another in this process (see module doc)."""
    from disco_zoo.runtime.disco_executor import _input, build_node_model, node_forward
    from disco_zoo.runtime.transport import Transport

    from disco_zoo.disco.shards import read_config

    nodes = int(read_config(folder)["nodes"])
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    programs = []
    try:
        for k in range(nodes):
            transport = Transport(NullBackend(k, nodes), wire_dtype=wire_dtype)
            model, part = build_node_model(folder, transport)
            x = _input(None, list(input_shape), 0) if k == 0 else None
            forward = node_forward(transport, model, part, list(input_shape), x)
            with torch.inference_mode():
                runs = [run_without_wire(transport, forward) for _ in range(warmup + repeats)][warmup:]
            programs.append(median_program(runs))
            del model
    finally:
        torch.set_num_threads(saved)
    return ComputeProfile(programs)


def _link_map(links: Links, nodes: int) -> dict[tuple[int, int], LinkProfile]:
    if isinstance(links, LinkProfile) or links is None:
        profile = links or LinkProfile()
        return {(s, d): profile for s in range(nodes) for d in range(nodes) if s != d}
    return {pair: links.get(pair, LinkProfile()) for pair in ((s, d) for s in range(nodes) for d in range(nodes) if s != d)}


def _occurrences(events: list[Event], kind: str) -> Iterator[tuple[int, int, int]]:
    """(event index, peer, n-th message with this (peer, tag) so far) for ``kind`` events."""
    seen: dict[tuple[int, int], int] = defaultdict(int)
    for i, e in enumerate(events):
        if e.kind == kind:
            yield i, e.peer, seen[(e.peer, e.tag)]
            seen[(e.peer, e.tag)] += 1


@dataclass(frozen=True)
class MessageCost:
    """What one message costs in software beyond the link: it arrives ``fixed_s`` +
    ``per_byte_s`` x bytes late, and posting it takes the sender ``send_fixed_s`` +
    ``send_per_byte_s`` x bytes of its own time (the backend's calls; on small inputs,
    with ~100 messages per inference of a few ms, these add up to tens of percent)."""

    fixed_s: float = 0.0
    per_byte_s: float = 0.0
    send_fixed_s: float = 0.0
    send_per_byte_s: float = 0.0

    def __call__(self, nbytes: int) -> float:
        return self.fixed_s + self.per_byte_s * nbytes

    def sender(self, nbytes: int) -> float:
        return self.send_fixed_s + self.send_per_byte_s * nbytes


SMALL_MESSAGE, LARGE_MESSAGE = 1024, 1 << 20
CALIBRATION_LATENCY_S = 1e-3  # the emulated link the ping-pongs use (unlimited bandwidth)


def _pingpong(backend: str, nbytes: int, emulated: bool, iters: int) -> tuple[float, float]:
    """Median one-way seconds of an ``nbytes`` ping-pong, less the emulated link's
    latency, and the median time the sender's isend call takes.

    Emulated, the link has a latency, so every message is held until its delivery time
    by a timed wait (a sleep wakes late by tens to hundreds of microseconds in a VM), as
    every message on a slow link is; what is left is the software's cost.
    """
    from disco_zoo.runtime.launch import launch

    link = LinkProfile(1e15, CALIBRATION_LATENCY_S) if emulated else None
    results = launch("disco_zoo.runtime.selftest:pingpong", 2, backend, args={"nbytes": nbytes, "iters": iters},
                     timeout_s=60, link=link)
    one_way = float(results[0]["median_s"]) - (CALIBRATION_LATENCY_S if emulated else 0.0)
    return one_way, float(results[0]["send_call_s"])


def _line(small: float, large: float) -> tuple[float, float]:
    """(fixed, per byte) of the line through the 1 KB and 1 MiB measurements."""
    per_byte = max(0.0, (large - small) / (LARGE_MESSAGE - SMALL_MESSAGE))
    return max(0.0, small - per_byte * SMALL_MESSAGE), per_byte


def measure_message_cost(backend: str = "mpi", emulated: bool = True, iters: int = 100) -> MessageCost:
    """:class:`MessageCost` from two ping-pongs (1 KB and 1 MiB): for the arrival and
    for the sender's own time, a fixed part and the copying that grows with the message
    (a line through the two)."""
    small, small_send = _pingpong(backend, SMALL_MESSAGE, emulated, iters)
    large, large_send = _pingpong(backend, LARGE_MESSAGE, emulated, iters)
    return MessageCost(*_line(small, large), *_line(small_send, large_send))


def predict_latency(profile: ComputeProfile, links: Links = None, message_cost: float | MessageCost = 0.0) -> float:
    """Predicted seconds per inference (slowest rank) over ``links`` (see module doc);
    ``message_cost`` is seconds per message or a :class:`MessageCost`."""
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
    delivered: dict[tuple[int, int, int, int], float] = {}
    free_at: dict[tuple[int, int], float] = defaultdict(float)
    clock, position = [0.0] * nodes, [0] * nodes
    send_done_queue: dict[int, dict[tuple[int, int], list[float]]] = {p.rank: defaultdict(list) for p in programs}
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
                clock[k] = at
                position[k] += 1
                progressed = True
        if all(position[p.rank] == len(p.events) for p in programs):
            break
        if not progressed:
            stuck = [p.rank for p in programs if position[p.rank] < len(p.events)]
            raise DiscoZooError(f"the ranks' programs deadlock (ranks {stuck} wait for messages never sent)")
    return max(clock[p.rank] + p.tail_s for p in programs)
