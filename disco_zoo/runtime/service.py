"""A DISCO model that stays loaded: every rank serves inference after inference.

Why: ``run_disco`` is a benchmark, one launch per inference; an application calls the
model many times and must not pay the start, the imports and the shard load each time.
Each rank loads its own shard once (:func:`~disco_zoo.runtime.disco_executor.load_node`)
and then loops. Every call runs exactly the one-shot path's per-inference code
(:func:`~disco_zoo.runtime.disco_executor.inference_fn`: the image scatter from rank 0,
then the layer exchanges), so the bytes a call puts on the wire are what the accounting
predicts, counted by the same transport.

Around that, two small protocols:

* **the application <-> rank 0** (the root, on the application's own device): a Unix
  socket in the run's private directory (``multiprocessing.connection``, with an
  authentication key; frames are a JSON header and raw tensor bytes, never pickles).
  Rank 0 opens it once every rank has loaded its shard.
* **rank 0 -> its peers**: before each call a request header (:data:`HEADER_LEN` int32:
  the operation, a check of the model and wire dtype, the input's shape), so a peer
  knows the batch size to receive. Headers go over a transport of their own sharing the
  backend and links, so the model's counters hold only what the accounting predicts;
  the header's bytes are counted apart (``request_bytes``). A peer waits for the next
  header up to ``idle_timeout_s`` (idle is normal for a server), but every message of a
  call is bounded by the run's timeout as in a one-shot run.

A failure inside a call is fatal for the session (the peers' message order is lost): the
rank raises, and the worker records it and exits, as in a one-shot run.
"""
from __future__ import annotations

import json
import zlib
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.disco_executor import inference_fn, load_node, node_folder, output_rank
from disco_zoo.runtime.transport import Transport
from disco_zoo.store import CONFIG_NAME

__all__ = ["serve_disco", "send_frame", "recv_frame", "model_check", "REQUEST_TAG", "HEADER_LEN", "IDLE_TIMEOUT_S",
           "SERVE_ENTRY"]

SERVE_ENTRY = "disco_zoo.runtime.service:serve_disco"
REQUEST_TAG = "request"
MAX_DIMS = 5
HEADER_LEN = 3 + MAX_DIMS  # op, model check, ndim, shape (padded)
OP_CALL, OP_STOP = 1, 2
IDLE_TIMEOUT_S = 24 * 3600.0  # how long a peer waits for the next request before giving up


# -- frames on the application's socket: a JSON header, then optional raw bytes -------------

def send_frame(conn: Connection, header: dict[str, Any], tensor: torch.Tensor | None = None) -> None:
    """Send ``header`` and, when given, ``tensor``'s float32 bytes (its shape in the header)."""
    if tensor is not None:
        tensor = tensor.detach().to(torch.float32).contiguous().cpu()
        header = {**header, "shape": list(tensor.shape)}
    conn.send_bytes(json.dumps(header).encode())
    if tensor is not None:
        conn.send_bytes(memoryview(tensor.numpy()).cast("B"))


def recv_frame(conn: Connection) -> tuple[dict[str, Any], torch.Tensor | None]:
    """The peer's next :func:`send_frame` (EOFError when it has gone)."""
    header = json.loads(conn.recv_bytes())
    if "shape" not in header:
        return header, None
    data = bytearray(conn.recv_bytes())
    return header, torch.frombuffer(data, dtype=torch.float32).reshape(header["shape"]) if data else \
        torch.empty(header["shape"])


def send_output(conn: Connection, out: Any) -> None:
    """A model output: one frame for a tensor; for a tuple/dict (segmenters return
    ``{"out": ...}``) a header with its pytree spec, then one frame per leaf."""
    if isinstance(out, torch.Tensor):
        send_frame(conn, {"op": "output"}, out)
        return
    from torch.utils._pytree import tree_flatten, treespec_dumps

    leaves, spec = tree_flatten(out)
    send_frame(conn, {"op": "output", "treespec": treespec_dumps(spec), "leaves": len(leaves)})
    for leaf in leaves:
        send_frame(conn, {"op": "leaf"}, leaf)


def recv_output(conn: Connection) -> tuple[dict[str, Any], Any]:
    """:func:`send_output`'s other end (any other frame is returned as :func:`recv_frame` does)."""
    header, tensor = recv_frame(conn)
    if "treespec" not in header:
        return header, tensor
    from torch.utils._pytree import tree_unflatten, treespec_loads

    leaves = [recv_frame(conn)[1] for _ in range(header["leaves"])]
    return header, tree_unflatten(leaves, treespec_loads(header["treespec"]))


def model_check(folder: Path | str, wire_dtype: str) -> int:
    """A number every rank of one model and wire dtype agrees on (config.json's crc32)."""
    return zlib.crc32((Path(folder) / CONFIG_NAME).read_bytes() + wire_dtype.encode()) & 0x7FFFFFFF


# -- the ranks' loop ------------------------------------------------------------------------

def _header(op: int, check: int, shape: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
    if len(shape) > MAX_DIMS:
        raise DiscoZooError(f"an input of {len(shape)} dimensions: at most {MAX_DIMS} are supported")
    return torch.tensor([op, check, len(shape), *shape, *[0] * (MAX_DIMS - len(shape))], dtype=torch.int32)


def _counter_bytes(t: Transport) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(t.counter.to_dict()).encode()), dtype=torch.uint8)


def serve_disco(t: Transport, folder: str, control: str | None = None, authkey: str | None = None,
                idle_timeout_s: float = IDLE_TIMEOUT_S, verify: bool = True) -> dict[str, Any]:
    """Launch entry: load this rank's shard, then serve calls until rank 0 says stop.

    Rank 0 also needs ``control`` (the socket path the application connects to) and
    ``authkey`` (hex). Returns this rank's summary: calls served and load statistics.
    """
    folder = str(node_folder(folder, t.rank))
    model, part, stats = load_node(t, folder, verify)
    if output_rank(part) != 0:
        raise DiscoZooError(f"{folder}'s output is on rank {output_rank(part)}; serving needs it on rank 0")
    requests = Transport(t.backend, t.wire_dtype, t.links or None, timeout_s=idle_timeout_s, board=t.board)
    check = model_check(folder, t.wire_dtype)
    t.barrier()  # every rank has its shard before the application hears "ready"
    with torch.inference_mode():
        if t.rank == 0:
            if not control or not authkey:
                raise DiscoZooError("rank 0 serves an application: it needs control= and authkey=")
            calls = _serve_root(t, requests, model, part, check, control, bytes.fromhex(authkey), stats)
        else:
            calls = _serve_peer(t, requests, model, part, check)
    return {"rank": t.rank, "calls": calls, **stats}


def _serve_root(t: Transport, requests: Transport, model: Any, part: Any, check: int, control: str,
                authkey: bytes, stats: dict[str, Any]) -> int:
    peers = range(1, t.world_size)
    with Listener(control, family="AF_UNIX", authkey=authkey) as listener, listener.accept() as conn:
        send_frame(conn, {"op": "ready", "world_size": t.world_size, "backend": t.backend.name, **stats})
        calls = 0
        while True:
            header, x = recv_frame(conn)
            if header["op"] == "stop":
                for handle in [requests.isend(_header(OP_STOP, check), p, REQUEST_TAG) for p in peers]:
                    handle.wait()
                counters = [t.counter.to_dict()]
                for p in peers:
                    size = int(requests.recv([1], torch.int64, p, REQUEST_TAG)[0])
                    counters.append(json.loads(bytes(requests.recv([size], torch.uint8, p, REQUEST_TAG).numpy())))
                send_frame(conn, {"op": "stopped", "calls": calls, "bytes": counters,
                                  "request_bytes": requests.counter.total})
                return calls
            if x is None:
                raise DiscoZooError(f"unknown request {header.get('op')!r} from the application")
            for handle in [requests.isend(_header(OP_CALL, check, x.shape), p, REQUEST_TAG) for p in peers]:
                handle.wait()
            out = inference_fn(t, model, part, list(x.shape), x, at_size=False)()  # as the model itself would
            calls += 1
            send_output(conn, out)


def _serve_peer(t: Transport, requests: Transport, model: Any, part: Any, check: int) -> int:
    calls = 0
    while True:
        header = requests.recv([HEADER_LEN], torch.int32, 0, REQUEST_TAG).tolist()
        op, theirs, ndim = header[:3]
        if theirs != check:
            raise DiscoZooError(f"rank {t.rank}: rank 0 runs another model or wire dtype than this rank "
                                "(give every node the same MODEL and --wire-dtype)")
        if op == OP_STOP:
            payload = _counter_bytes(t)
            requests.send(torch.tensor([payload.numel()], dtype=torch.int64), 0, REQUEST_TAG)
            requests.send(payload, 0, REQUEST_TAG)
            return calls
        inference_fn(t, model, part, header[3:3 + ndim], None, at_size=False)()
        calls += 1
