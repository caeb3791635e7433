"""MPI backend (default): mpi4py point-to-point on raw bytes of contiguous tensors.

Buffers are numpy *views* of the tensor memory sent as MPI.BYTE, so nothing is pickled
or copied and any dtype (fp16 included) travels as its bytes. Ranks are started by
``mpiexec`` (locally or across hosts with ``-hosts``).
"""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["MPIBackend"]


def _bytes_view(buf: torch.Tensor) -> Any:
    """A uint8 numpy array sharing ``buf``'s memory (buf must be contiguous on CPU)."""
    return buf.reshape(-1).view(torch.uint8).numpy()


class MPIBackend:
    name = "mpi"

    def __init__(self) -> None:
        from mpi4py import MPI  # initialises MPI

        self._mpi = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()

    def post_send(self, buf: torch.Tensor, dst: int, tag: int) -> Any:
        return self.comm.Isend([_bytes_view(buf), self._mpi.BYTE], dest=dst, tag=tag)

    def post_recv(self, buf: torch.Tensor, src: int, tag: int) -> Any:
        return self.comm.Irecv([_bytes_view(buf), self._mpi.BYTE], source=src, tag=tag)

    def wait(self, request: Any, deadline: float) -> bool:
        """Poll Test() until done or ``deadline`` (MPI has no timed wait)."""
        from disco_zoo.runtime.transport import poll_until

        return poll_until(request.Test, deadline)

    def post_barrier(self) -> Any:
        return self.comm.Ibarrier()

    def close(self) -> None:
        """MPI is finalised by mpi4py at interpreter exit."""
