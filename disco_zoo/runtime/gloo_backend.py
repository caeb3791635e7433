"""torch.distributed gloo backend: env:// rendezvous (our launcher or ``torchrun``).

Point-to-point uses gloo's tagged isend/irecv on a uint8 view of the tensor, so every
dtype travels as its bytes, exactly as on MPI.

The rendezvous has no authentication, so it listens only where the ranks reach it: rank 0
hosts the TCPStore on a socket bound to ``MASTER_ADDR`` itself (torch's own store binds
every interface), and with a loopback ``MASTER_ADDR`` gloo's pair sockets stay on the
loopback interface too (``GLOO_SOCKET_IFNAME``). Under torchrun the store is the agent's
(torchrun's to bind); across hosts name the interface with ``GLOO_SOCKET_IFNAME`` or the
worker's ``--iface``.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.errors import RendezvousError

__all__ = ["GlooBackend"]

_ADDRESS_IN_USE = ("address already in use", "eaddrinuse", "errno 98")
LOOPBACK_IFACE = "lo"


def is_loopback(host: str) -> bool:
    """Does ``host`` (a name or an address) resolve to loopback addresses only?"""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` only (not every interface)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def make_store(host: str, port: int, rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store: rank 0 serves it on a socket bound to ``host`` alone."""
    if rank != 0:
        return dist.TCPStore(host, port, world_size, False, timeout, multi_tenant=True)
    fd = listening_socket(host, port).detach()  # the store owns the socket from here
    return dist.TCPStore(host, port, world_size, True, timeout, multi_tenant=True, master_listen_fd=fd)


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
        host, port, timeout = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), timedelta(seconds=timeout_s)
        if is_loopback(host):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK_IFACE)
        try:
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":  # torchrun's agent serves the store
                dist.init_process_group("gloo", init_method="env://", rank=self.rank, world_size=self.world_size,
                                        timeout=timeout)
            else:
                store = make_store(host, port, self.rank, self.world_size, timeout)
                dist.init_process_group("gloo", store=store, rank=self.rank, world_size=self.world_size,
                                        timeout=timeout)
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
