"""The torch transport's wire, on numpy arrays: MPI, counted bytes, link emulation, timeouts.

Why a second class: :class:`disco_zoo.runtime.transport.Transport` holds torch tensors.
This one keeps exactly its semantics on numpy buffers, so a torch rank and an onnx rank
can talk to each other: the same tag ids (:func:`disco_zoo.runtime.wire.tag_id`), raw
bytes in the wire dtype (fp32 or fp16), an emulated link's float64 delivery stamp sent as
a message of its own right after the payload, sends counted per pair and tag, and every
wait bounded by the timeout, a dead peer becoming a :class:`PeerError` naming it.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import PeerError
from disco_zoo.runtime.link import LinkEmulator
from disco_zoo.runtime.wire import BoundedWaits, ByteCounter, poll_until, tag_id
from disco_zoo.timing.links import Link

__all__ = ["EdgeTransport", "MPIArrayBackend", "WIRE_DTYPES"]

WIRE_DTYPES = {"fp32": np.float32, "fp16": np.float16}


class MPIArrayBackend:
    """mpi4py point-to-point on the raw bytes of contiguous numpy arrays (as MPIBackend)."""

    name = "mpi"

    def __init__(self) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()

    def post_send(self, buf: np.ndarray, dst: int, tag: int) -> Any:
        return self.comm.Isend([buf.reshape(-1).view(np.uint8), self._mpi.BYTE], dest=dst, tag=tag)

    def post_recv(self, buf: np.ndarray, src: int, tag: int) -> Any:
        return self.comm.Irecv([buf.reshape(-1).view(np.uint8), self._mpi.BYTE], source=src, tag=tag)

    def wait(self, request: Any, deadline: float) -> bool:
        return poll_until(request.Test, deadline)

    def post_barrier(self) -> Any:
        return self.comm.Ibarrier()

    def close(self) -> None:
        """mpi4py finalises MPI at interpreter exit."""


class _Send:
    def __init__(self, t: "EdgeTransport", buf: np.ndarray, dst: int, tag: str, deliver_at: float | None) -> None:
        self._t, self.dst, self.tag = t, dst, tag
        self.deliver_at = 0.0 if deliver_at is None else deliver_at
        self._bufs = [buf] if deliver_at is None else [buf, np.array([deliver_at], dtype=np.float64)]
        try:
            self._requests = [t.backend.post_send(b, dst, tag_id(tag)) for b in self._bufs]
        except Exception as err:
            raise t._wrap(err, "send to", dst, tag) from err

    def wait(self) -> None:
        deadline = time.monotonic() + self._t.timeout_s
        nbytes = self._bufs[0].nbytes if self._bufs else 0
        self._t._wait_all(self._requests, "send to", self.dst, self.tag, deadline)
        self._bufs = []
        self._t._hold_until(self.deliver_at, deadline, (self._t.rank, self.dst), self.tag, nbytes)


class _Recv:
    def __init__(self, t: "EdgeTransport", shape: Sequence[int], wire: Any, dtype: Any, src: int, tag: str,
                 stamped: bool) -> None:
        self._t, self._dtype, self.src, self.tag = t, dtype, src, tag
        self._buf = np.empty(tuple(shape), dtype=wire)
        self._stamp = np.empty(1, dtype=np.float64) if stamped else None
        bufs = [self._buf] if self._stamp is None else [self._buf, self._stamp]
        self._requests = [t.backend.post_recv(b, src, tag_id(tag)) for b in bufs]

    def wait(self) -> np.ndarray:
        deadline = time.monotonic() + self._t.timeout_s
        self._t._wait_all(self._requests, "receive from", self.src, self.tag, deadline)
        if self._stamp is not None:
            self._t._hold_until(float(self._stamp[0]), deadline, (self.src, self._t.rank), self.tag, self._buf.nbytes)
        return self._buf if self._buf.dtype == self._dtype else self._buf.astype(self._dtype)


class EdgeTransport(BoundedWaits):
    """Point-to-point messages between ranks on numpy arrays (see the module docstring)."""

    def __init__(self, backend: Any, wire_dtype: str = "fp32", links: Link | dict[tuple[int, int], Link] | None = None,
                 timeout_s: float = 60.0, board: Any = None) -> None:
        if wire_dtype not in WIRE_DTYPES:
            raise DiscoZooError(f"unknown wire dtype {wire_dtype!r}: use one of {sorted(WIRE_DTYPES)}")
        self.backend, self.rank, self.world_size = backend, backend.rank, backend.world_size
        self.wire_dtype, self.timeout_s = wire_dtype, float(timeout_s)
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise DiscoZooError(f"timeout must be a positive number of seconds, got {timeout_s!r}")
        self.counter, self.board = ByteCounter(), board
        if isinstance(links, Link):
            links = {(s, d): links for s in range(self.world_size) for d in range(self.world_size) if s != d}
        self.links = links or {}
        self._emulator = LinkEmulator(self.rank, self.links) or None

    def _check_peer(self, peer: int) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise DiscoZooError(f"rank {self.rank}: bad peer {peer} (world size {self.world_size})")

    def isend(self, array: np.ndarray, dst: int, tag: str) -> _Send:
        self._check_peer(dst)
        wire = WIRE_DTYPES[self.wire_dtype]
        buf = np.ascontiguousarray(array.astype(wire, copy=False) if array.dtype.kind == "f" else array)
        self.counter.add(self.rank, dst, tag, buf.nbytes)
        if self._emulator is None or dst not in self._emulator.profiles:
            return _Send(self, buf, dst, tag, None)
        return _Send(self, buf, dst, tag, self._emulator.delivery_time(dst, buf.nbytes, time.monotonic()))

    def irecv(self, shape: Sequence[int], dtype: Any, src: int, tag: str) -> _Recv:
        self._check_peer(src)
        dtype = np.dtype(dtype)
        wire = WIRE_DTYPES[self.wire_dtype] if dtype.kind == "f" else dtype
        stamped = self._emulator is not None and src in self._emulator.sources
        return _Recv(self, shape, wire, dtype, src, tag, stamped)

    def barrier(self) -> None:
        request = self.backend.post_barrier()
        if self.board is not None:
            self.board.waiting("reach the barrier with every rank", None, "barrier")
        try:
            done = self.backend.wait(request, time.monotonic() + self.timeout_s)
        except Exception as err:
            raise PeerError(f"rank {self.rank}: barrier failed: {err}", tag="barrier") from err
        if not done:
            raise PeerError(f"rank {self.rank}: barrier not reached by every rank within {self.timeout_s:g} s",
                            tag="barrier")
        if self.board is not None:
            self.board.done()

    def close(self) -> None:
        self.backend.close()
