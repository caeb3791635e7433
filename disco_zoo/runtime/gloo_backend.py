"""torch.distributed gloo backend: env:// rendezvous (our launcher or ``torchrun``).

Point-to-point uses gloo's tagged isend/irecv on a uint8 view of the tensor, so every
dtype travels as its bytes, exactly as on MPI.
"""
from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import RendezvousError

__all__ = ["GlooBackend"]

_ADDRESS_IN_USE = ("address already in use", "eaddrinuse", "errno 98")


class GlooBackend:
    name = "gloo"

    def __init__(self, timeout_s: float = 60.0) -> None:
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise DiscoZooError(
                f"gloo backend needs {', '.join(missing)} in the environment: start ranks with "
                "disco_zoo.runtime.launch or torchrun"
            )
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        try:
            dist.init_process_group(
                "gloo", init_method="env://", rank=self.rank, world_size=self.world_size,
                timeout=timedelta(seconds=timeout_s),
            )
        except Exception as err:  # the TCP store could not bind or peers never came
            text = str(err).lower()
            if any(s in text for s in _ADDRESS_IN_USE):
                raise RendezvousError(f"rank {self.rank}: port {os.environ['MASTER_PORT']} is busy: {err}") from err
            raise RendezvousError(f"rank {self.rank}: gloo rendezvous failed: {err}") from err

    @staticmethod
    def _bytes(buf: torch.Tensor) -> torch.Tensor:
        return buf.reshape(-1).view(torch.uint8)

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> Any:
        return dist.isend(self._bytes(buf), dst=dst, tag=tag)

    def post_recv(self, buf: torch.Tensor, src: int, tag: int) -> Any:
        return dist.irecv(self._bytes(buf), src=src, tag=tag)

    def wait(self, request: Any, deadline: float) -> bool:
        """gloo's timed wait (its send/recv works only complete inside wait())."""
        remaining = max(deadline - time.monotonic(), 0.001)
        try:
            request.wait(timeout=timedelta(seconds=remaining))
        except Exception as err:
            if "timed out" in str(err).lower() or "timeout" in str(err).lower():
                return False
            raise
        return True

    def post_barrier(self) -> Any:
        return dist.barrier(async_op=True)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
