"""A lean rank under the runtime's launcher or mpiexec: the worker's contract, no torch.

:mod:`disco_zoo.runtime.worker` hands a rank whose entry lives in ``disco_zoo.edge`` to
:func:`main_spec` before it imports torch. It records the result the same way (an
atomic ``rank<k>.json`` in the launcher's directory, or a ``DISCO_ZOO_RESULT`` line),
writes its pid and wait board so that the launcher can watch it, and exits at once on
failure.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from disco_zoo.runtime.worker import _rank_hint, _record, _supervise, bind_interface, rank_entry, resolve_entry

__all__ = ["main_spec", "make_edge_transport"]


def make_edge_transport(spec: dict[str, Any], board: Any = None) -> Any:
    from disco_zoo.edge.transport import EdgeTransport, MPIArrayBackend
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.timing.links import Link

    if spec["backend"] != "mpi":
        raise DiscoZooError(f"the onnx engine talks MPI only (gloo is torch.distributed); got backend {spec['backend']!r}")
    link = spec.get("link")
    if isinstance(link, list):
        links = {(src, dst): Link(**profile) for src, dst, profile in link}
    else:
        links = Link(**link) if link else None
    return EdgeTransport(MPIArrayBackend(), wire_dtype=spec.get("wire_dtype", "fp32"), links=links,
                         timeout_s=spec["timeout_s"], board=board)


def _run(spec: dict[str, Any], rank: int) -> tuple[int, Any, Any]:
    out_dir = Path(spec["out_dir"]) if spec.get("out_dir") else None
    board = None
    if out_dir:
        from disco_zoo.runtime.rank_status import WaitBoard

        (out_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
        board = WaitBoard(out_dir / f"rank{rank}.wait")
    bind_interface(spec)
    transport = make_edge_transport(spec, board)
    function = resolve_entry(rank_entry(spec["entry"], transport.rank))
    args = dict(spec.get("args", {}))
    args.setdefault("threads", int(spec.get("threads_per_rank", 1)))
    result = function(transport, **args)
    json.dumps(result)
    return transport.rank, result, transport


def main_spec(spec: dict[str, Any]) -> None:
    """Run this rank's lean entry and record its result (or its failure, then exit 1)."""
    rank = _rank_hint()
    if spec.get("supervised"):
        _supervise()
    try:
        rank, result, transport = _run(spec, rank)
    except BaseException as err:
        from disco_zoo.runtime.errors import PeerError

        payload = {
            "ok": False, "error": f"{type(err).__name__}: {err}" if not isinstance(err, PeerError) else str(err),
            "type": type(err).__name__, "peer": getattr(err, "rank", None) if isinstance(err, PeerError) else None,
            "tag": getattr(err, "tag", None), "traceback": traceback.format_exc(limit=8),
        }
        try:
            _record(spec, rank, payload)
        finally:
            if not spec.get("supervised"):
                sys.stderr.write(payload["traceback"])
                sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
    _record(spec, rank, {"ok": True, "result": result})
    transport.close()
