"""Tiny entries for checking a launcher set-up by hand (and for the tests)."""
from __future__ import annotations

import os
import time

import torch

from disco_zoo.runtime.transport import Transport


def ping(t: Transport, size: int = 1024, tag: str = "ping") -> dict:
    """Rank 0 sends ``size`` bytes to every other rank and each sends them back."""
    data = torch.arange(size // 4, dtype=torch.float32)
    if t.rank == 0:
        for peer in range(1, t.world_size):
            t.send(data, peer, tag)
            back = t.recv(data.shape, data.dtype, peer, tag)
            assert torch.equal(back, data.to(back.dtype)) or t.wire_dtype != "fp32"
    else:
        t.send(t.recv(data.shape, data.dtype, 0, tag), 0, tag)
    return {"rank": t.rank, "world_size": t.world_size, "pid": os.getpid(), "bytes": t.counter.to_dict()}


def fail_at(t: Transport, bad_rank: int = 1, mode: str = "exit", tag: str = "layer1", pid_dir: str = "") -> dict:
    """Rank ``bad_rank`` exits early / hangs / raises; the others wait for it on ``tag``.

    ``pid_dir``: each rank writes its pid there, so a test can check none survives.
    """
    if pid_dir:
        with open(os.path.join(pid_dir, f"{t.rank}.pid"), "w") as f:
            f.write(f"{os.getpid()} {os.getppid()}")  # the parent: mpiexec's proxy, or the launcher
    if t.rank == bad_rank:
        if mode == "exit":
            os._exit(3)
        if mode == "hang":
            time.sleep(3600)
        raise ValueError("deliberate failure")
    t.recv((4,), torch.float32, bad_rank, tag)
    return {"rank": t.rank}


def exchange(t: Transport, numel: int = 6, tags: tuple[str, ...] = ("conv1", "fc")) -> dict:
    """Every rank isends a rank-stamped tensor to every other rank on every tag.

    Returns what arrived (as lists) and this rank's byte counter, so a test can check
    values, the wire dtype and the counts.
    """
    sends, recvs = [], {}
    for tag in tags:
        for peer in range(t.world_size):
            if peer != t.rank:
                recvs[(tag, peer)] = t.irecv((numel,), torch.float32, peer, tag)
                payload = torch.arange(numel, dtype=torch.float32) / 3 + 100 * t.rank + 10 * peer
                sends.append(t.isend(payload, peer, tag))
    got = {f"{tag}:{peer}": h.wait().tolist() for (tag, peer), h in recvs.items()}
    for h in sends:
        h.wait()
    t.barrier()
    return {"got": got, "bytes": t.counter.to_dict()}


def timed_send(t: Transport, nbytes: int = 12500, messages: int = 1) -> dict:
    """Rank 0 isends ``messages`` messages of ``nbytes`` to rank 1 at once; rank 1 times
    their arrival from the barrier (checks the link emulation's delivery times)."""
    data = torch.zeros(nbytes // 4, dtype=torch.float32)
    t.barrier()
    start = time.monotonic()
    if t.rank == 0:
        handles = [t.isend(data, 1, f"m{i}") for i in range(messages)]
        for h in handles:
            h.wait()
        return {"rank": 0, "send_s": time.monotonic() - start}
    if t.rank == 1:
        arrivals = []
        handles = [t.irecv(data.shape, data.dtype, 0, f"m{i}") for i in range(messages)]
        for h in handles:
            h.wait()
            arrivals.append(time.monotonic() - start)
        return {"rank": 1, "arrivals": arrivals}
    return {"rank": t.rank}


def sleep(t: Transport, seconds: float = 1.0) -> dict:
    """Sleep without touching the transport (a hang no peer would notice)."""
    time.sleep(seconds)
    return {"rank": t.rank}


def threads(t: Transport) -> dict:
    """What the launcher set up in this rank's process."""
    return {"rank": t.rank, "torch_threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}


def steady(t: Transport, seconds: float = 60.0, pause_s: float = 0.02, tag: str = "step", pid_dir: str = "") -> dict:
    """A run that keeps talking, for fault tests: rank 0 asks every other rank in turn and
    each answers after ``pause_s``, for ``seconds``; so rank 0 spends its time waiting to
    receive on ``tag`` while a test kills or stops a rank.

    ``pid_dir``: each rank writes ``<rank>.pid`` ("pid parent-pid") there once its
    transport is up, so a test knows when and whom to hit.
    """
    if pid_dir:
        with open(os.path.join(pid_dir, f"{t.rank}.pid"), "w") as f:
            f.write(f"{os.getpid()} {os.getppid()}")
    end, rounds, going = time.monotonic() + seconds, 0, True
    while going:  # rank 0 alone decides when to stop (1: go on, 0: stop), so no rank waits for ever
        if t.rank == 0:
            going = time.monotonic() < end
            for peer in range(1, t.world_size):
                t.send(torch.tensor([float(going)]), peer, tag)
                if going:
                    t.recv((1,), torch.float32, peer, tag)
        else:
            going = bool(t.recv((1,), torch.float32, 0, tag)[0])
            if going:
                time.sleep(pause_s)
                t.send(torch.ones(1), 0, tag)
        rounds += going
    return {"rank": t.rank, "rounds": rounds}
