"""A transport that records a node's messages while torch.export traces its model.

Why: the ONNX program of a node must follow the torch executor's message schedule
exactly. Rather than re-deriving that schedule, the exporter runs the executor's own
node model (:func:`disco_zoo.runtime.disco_executor.build_node_model`) over this
transport: every group of posted sends/receives becomes one opaque ``disco_export::exchange``
call in the traced graph, in program order, with the tensors it sends as inputs and the
tensors it receives as outputs. The graph is then cut at those calls (:mod:`.segments`).

A token tensor threads through every exchange, so the calls stay ordered and none is
removed as dead code (a send-only exchange has no other use).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

__all__ = ["TracingTransport", "ExchangeRecord", "exchange_op"]

# the recv shapes of each exchange call, by step index, for the op's fake (shape-only) implementation
_RECV_SHAPES: dict[int, list[tuple[list[int], torch.dtype]]] = {}


@torch.library.custom_op("disco_export::exchange", mutates_args=())
def exchange_op(token: torch.Tensor, sends: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    """Marks one exchange in a traced graph: [next token, *received tensors]. Never run for data."""
    return [token.clone()] + [torch.zeros(shape, dtype=dtype) for shape, dtype in _RECV_SHAPES[step]]


@exchange_op.register_fake
def _exchange_fake(token: torch.Tensor, sends: list[torch.Tensor], step: int) -> list[torch.Tensor]:
    return [torch.empty_like(token)] + [torch.empty(shape, dtype=dtype) for shape, dtype in _RECV_SHAPES[step]]


@dataclass
class ExchangeRecord:
    """One exchange as the executor posted it: receives first, then sends (program order)."""

    step: int
    recvs: list[dict[str, Any]] = field(default_factory=list)  # {"peer", "tag", "shape", "dtype"}
    sends: list[dict[str, Any]] = field(default_factory=list)  # {"peer", "tag"}


class _Handle:
    def __init__(self, transport: "TracingTransport", recv_index: int | None) -> None:
        self._transport, self._recv_index = transport, recv_index

    def wait(self) -> torch.Tensor | None:
        received = self._transport._flush()
        return None if self._recv_index is None else received[self._recv_index]


class TracingTransport:
    """Stands in for :class:`disco_zoo.runtime.transport.Transport` while tracing.

    Messages posted before the first ``wait()`` form one exchange, which is how the
    executor's layers use the transport (post every receive and send, then wait)."""

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self.records: list[ExchangeRecord] = []
        self.token: torch.Tensor | None = None
        self._recvs: list[dict[str, Any]] = []
        self._sends: list[tuple[dict[str, Any], torch.Tensor]] = []
        self._received: list[torch.Tensor] = []
        self._base = 0  # index of this exchange's first receive in _received

    def isend(self, tensor: torch.Tensor, dst: int, tag: str) -> _Handle:
        self._sends.append(({"peer": dst, "tag": tag}, tensor.contiguous()))
        return _Handle(self, None)

    def irecv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> _Handle:
        self._recvs.append({"peer": src, "tag": tag, "shape": [int(s) for s in shape], "dtype": dtype})
        return _Handle(self, len(self._received) + len(self._recvs) - 1)

    def send(self, tensor: torch.Tensor, dst: int, tag: str) -> None:
        self.isend(tensor, dst, tag).wait()

    def recv(self, shape: Sequence[int], dtype: torch.dtype, src: int, tag: str) -> torch.Tensor:
        return self.irecv(shape, dtype, src, tag).wait()

    def _flush(self) -> list[torch.Tensor]:
        """Emit the pending messages as one exchange call (no-op when none are pending)."""
        if not self._recvs and not self._sends:
            return self._received
        step = len(self.records)
        _RECV_SHAPES[step] = [(r["shape"], r["dtype"]) for r in self._recvs]
        out = exchange_op(self.token, [t for _, t in self._sends], step)
        self.token = out[0]
        self.records.append(ExchangeRecord(step, list(self._recvs), [s for s, _ in self._sends]))
        self._received = self._received + list(out[1:])
        self._recvs, self._sends = [], []
        return self._received
