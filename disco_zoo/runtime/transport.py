"""The one transport interface every rank talks through, whatever the backend.

It owns what must be identical on MPI and gloo: byte counting per ordered pair and per
tag, the wire dtype cast, link emulation and receive timeouts. Backends only post raw
sends/receives of contiguous CPU tensors and say whether a request has completed.

Tags are strings (layer names). Backends need integers, so a tag is hashed
(``tag_id``); two tags that collide are still matched correctly because both sides post
messages between a pair in the same program order, and MPI/gloo never reorder messages
with the same (source, tag).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Iterator, Protocol, Sequence

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.link import LinkEmulator
from disco_zoo.runtime.rank_status import WaitBoard
from disco_zoo.runtime.wire import (  # the torch-free core
    MAX_TAG, BoundedWaits, ByteCounter, poll_until, tag_id, wait_until,
)
from disco_zoo.timing.links import Link

__all__ = ["Transport", "ByteCounter", "Backend", "WIRE_DTYPES", "MAX_TAG", "tag_id", "poll_until", "wait_until"]

WIRE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class Backend(Protocol):
    """What a backend provides: raw non-blocking point-to-point on contiguous tensors."""

    rank: int
    world_size: int
    name: str

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> Any: ...
    def post_recv(self, buf: torch.Tensor, src: int, tag: int) -> Any: ...
    def wait(self, request: Any, deadline: float) -> bool: ...  # False: still pending at deadline; raises if it failed
    def post_barrier(self) -> Any: ...
    def close(self) -> None: ...


class SendHandle:
    """A posted send; ``wait()`` returns once the backend is done with it and, on an
    emulated link, no earlier than its delivery time."""

    def __init__(self, transport: "Transport", buf: torch.Tensor, dst: int, tag: str,
                 deliver_at: float | None = None) -> None:
        self._transport, self.dst, self.tag = transport, dst, tag
        self.deliver_at = 0.0 if deliver_at is None else deliver_at
        # keeps the wire buffers alive until done; an emulated link's message is followed
        # by its stamp, a message of its own (same peer and tag, so MPI and gloo match it next)
        self._bufs = [buf] if deliver_at is None else [buf, torch.tensor([deliver_at], dtype=torch.float64)]
        try:
            self._requests = [transport.backend.post_send(b, dst, tag_id(tag)) for b in self._bufs]
        except Exception as err:
            raise transport._wrap(err, "send to", dst, tag) from err

    def wait(self) -> None:
        deadline = time.monotonic() + self._transport.timeout_s
        nbytes = self._bufs[0].numel() * self._bufs[0].element_size() if self._bufs else 0
        self._transport._wait_all(self._requests, "send to", self.dst, self.tag, deadline)
        self._bufs = []
        self._transport._hold_until(self.deliver_at, deadline, (self._transport.rank, self.dst), self.tag, nbytes)


class RecvHandle:
    """A posted receive; ``wait()`` returns the tensor in the requested dtype. From an
    emulated link the message is followed by its delivery time (the stamp), and ``wait()``
    holds the message until then."""

    def __init__(self, transport: "Transport", shape: Sequence[int], wire: torch.dtype, dtype: torch.dtype,
                 src: int, tag: str, stamped: bool) -> None:
        self._transport, self._dtype, self.src, self.tag = transport, dtype, src, tag
        self._buf = torch.empty(tuple(shape), dtype=wire)
        self._stamp = torch.empty(1, dtype=torch.float64) if stamped else None
        self._requests = [transport.backend.post_recv(b, src, tag_id(tag))
                          for b in ([self._buf] if self._stamp is None else [self._buf, self._stamp])]

    def wait(self) -> torch.Tensor:
        deadline = time.monotonic() + self._transport.timeout_s
        self._transport._wait_all(self._requests, "receive from", self.src, self.tag, deadline)
        if self._stamp is not None:
            nbytes = self._buf.numel() * self._buf.element_size()
            self._transport._hold_until(float(self._stamp[0]), deadline, (self.src, self._transport.rank), self.tag, nbytes)
        return self._buf if self._buf.dtype == self._dtype else self._buf.to(self._dtype)


class Transport(BoundedWaits):
    """Point-to-point messages between ranks, counted, optionally cast and link-emulated.

    ``links`` maps an ordered pair (src, dst) to its Link, or is one profile for
    every pair; ``timeout_s`` bounds every wait on a peer (then PeerError names it),
    the emulated delivery included. ``board``, when given, records each wait in progress
    so that the launcher can say what this rank was waiting for if a peer dies.
    """

    def __init__(
        self,
        backend: Backend,
        wire_dtype: str = "fp32",
        links: Link | dict[tuple[int, int], Link] | None = None,
        timeout_s: float = 60.0,
        board: WaitBoard | None = None,
    ) -> None:
        if wire_dtype not in WIRE_DTYPES:
            raise DiscoZooError(f"unknown wire dtype {wire_dtype!r}: use one of {sorted(WIRE_DTYPES)}")
        self.backend = backend
        self.rank, self.world_size = backend.rank, backend.world_size
        self.wire_dtype = wire_dtype
        self.timeout_s = float(timeout_s)
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):  # nan would make every wait endless
            raise DiscoZooError(f"timeout must be a positive number of seconds, got {timeout_s!r}")
        self.counter = ByteCounter()
        self.board = board
        if isinstance(links, Link):
            links = {(s, d): links for s in range(self.world_size) for d in range(self.world_size) if s != d}
        self.links = links or {}
        self._emulator = LinkEmulator(self.rank, self.links) or None

    # -- sending ------------------------------------------------------------------------
    def _wire(self, tensor: torch.Tensor) -> torch.Tensor:
        wire = WIRE_DTYPES[self.wire_dtype]
        tensor = tensor.detach()
        if tensor.is_floating_point() and tensor.dtype != wire:
            tensor = tensor.to(wire)
        return tensor.contiguous().cpu()

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise DiscoZooError(f"rank {self.rank}: bad peer {peer} (world size {self.world_size})")

    def isend(self, tensor: torch.Tensor, dst: int, tag: str) -> SendHandle:
        self._check_peer(dst)
        buf = self._wire(tensor)
        nbytes = buf.numel() * buf.element_size()
        self.counter.add(self.rank, dst, tag, nbytes)
        if self._emulator is None or dst not in self._emulator.profiles:
            return SendHandle(self, buf, dst, tag)
        # the message enters the link once the sender's cast/copy is done (its own time)
        return SendHandle(self, buf, dst, tag, self._emulator.delivery_time(dst, nbytes, time.monotonic()))

    def send(self, tensor: torch.Tensor, dst: int, tag: str) -> None:
        self.isend(tensor, dst, tag).wait()

    # -- receiving ----------------------------------------------------------------------
    def irecv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> RecvHandle:
        self._check_peer(src)
        wire = WIRE_DTYPES[self.wire_dtype] if dtype.is_floating_point else dtype
        stamped = self._emulator is not None and src in self._emulator.sources
        return RecvHandle(self, shape, wire, dtype, src, tag, stamped)

    def recv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> torch.Tensor:
        return self.irecv(shape, dtype, src, tag).wait()

    # -- collectives built on the backend -----------------------------------------------
    def barrier(self) -> None:
        """Every rank waits for every other, bounded by the timeout."""
        request = self.backend.post_barrier()
        if self.board is not None:
            self.board.waiting("reach the barrier with every rank", None, "barrier")
        try:
            done = self.backend.wait(request, time.monotonic() + self.timeout_s)
        except Exception as err:
            raise PeerError(f"rank {self.rank}: barrier failed: {err}", tag="barrier") from err
        if done and self.board is not None:
            self.board.done()
        if not done:
            raise PeerError(
                f"rank {self.rank}: barrier not reached by every rank within {self.timeout_s:g} s", tag="barrier"
            )

    def close(self) -> None:
        self.backend.close()

    @contextmanager
    def over(self, backend: Backend) -> Iterator["Transport"]:
        """Talk through ``backend`` instead, with no link emulation, until the block ends
        (the cost model runs an inference over a backend with no wire this way)."""
        saved = self.backend, self._emulator
        self.backend, self._emulator = backend, None
        try:
            yield self
        finally:
            self.backend, self._emulator = saved
