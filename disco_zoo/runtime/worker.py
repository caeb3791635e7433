"""Per-rank entry: ``python -m disco_zoo.runtime.worker``.

Started by our launcher (``--spec FILE``) or directly by a multi-host launcher:

    mpiexec -hosts localhost -n 2 python -m disco_zoo.runtime.worker \\
        --entry disco_zoo.runtime.selftest:ping --args '{"size": 1024}'
    torchrun --nnodes 1 --nproc-per-node 2 --master-addr 127.0.0.1 --master-port 29511 \\
        -m disco_zoo.runtime.worker --backend gloo --entry disco_zoo.runtime.selftest:ping

(give torchrun a free ``--master-port``: with port 0 its workers are told to connect to
port 0). Across hosts: ``mpiexec -hosts h1,h2 -n 2 ...`` or torchrun with ``--nnodes 2
--node-rank R --master-addr H1`` on each host; every host needs the same environment and
its node's shard file.

It builds the transport, calls ``function(transport, **args)`` and records the rank's
JSON-able return value: as ``rank<k>.json`` in ``--out-dir`` (written atomically, which
is how the launcher collects results) or, without ``--out-dir``, as one
``DISCO_ZOO_RESULT {...}`` line on stdout. A failure is recorded the same way and the
process exits at once with status 1 (no MPI_Finalize, which could wait on a dead peer).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

RESULT_PREFIX = "DISCO_ZOO_RESULT "


def resolve_entry(entry: str) -> Callable[..., Any]:
    """``"pkg.module:function"`` -> the function."""
    module_name, _, func_name = entry.partition(":")
    if not func_name:
        from disco_zoo.errors import DiscoZooError

        raise DiscoZooError(f"entry {entry!r} must look like 'package.module:function'")
    return getattr(importlib.import_module(module_name), func_name)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def make_transport(spec: dict[str, Any]):
    """The backend named in ``spec`` wrapped in a Transport with its link and wire dtype."""
    from disco_zoo.runtime.link import LinkProfile
    from disco_zoo.runtime.transport import Transport

    if spec["backend"] == "mpi":
        from disco_zoo.runtime.mpi_backend import MPIBackend

        backend = MPIBackend()
    elif spec["backend"] == "gloo":
        from disco_zoo.runtime.gloo_backend import GlooBackend

        backend = GlooBackend(timeout_s=spec["timeout_s"])
    else:
        from disco_zoo.errors import DiscoZooError

        raise DiscoZooError(f"unknown backend {spec['backend']!r}: use 'mpi' or 'gloo'")
    link = spec.get("link")
    if isinstance(link, list):  # per ordered pair: [[src, dst, profile], ...]
        links = {(src, dst): LinkProfile(**profile) for src, dst, profile in link}
    else:
        links = LinkProfile(**link) if link else None
    return Transport(backend, wire_dtype=spec.get("wire_dtype", "fp32"), links=links, timeout_s=spec["timeout_s"])


def _rank_hint() -> int:
    """Our rank before the backend is up (for error files written during set-up)."""
    for var in ("RANK", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def run(spec: dict[str, Any]) -> tuple[int, Any, Any]:
    """Run one rank: (rank, the entry's JSON-able result, the transport); raises on failure."""
    out_dir = Path(spec["out_dir"]) if spec.get("out_dir") else None
    rank = _rank_hint()
    if out_dir:
        (out_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    import torch

    torch.set_num_threads(int(spec.get("threads_per_rank", 1)))
    transport = make_transport(spec)
    function = resolve_entry(spec["entry"])
    result = function(transport, **spec.get("args", {}))
    json.dumps(result)  # fail here, clearly, if the entry returned something not JSON-able
    return transport.rank, result, transport


def _record(spec: dict[str, Any], rank: int, payload: dict[str, Any]) -> None:
    payload = {"rank": rank, **payload}
    if spec.get("out_dir"):
        write_json_atomic(Path(spec["out_dir"]) / f"rank{rank}.json", payload)
    else:
        sys.stdout.flush()
        os.write(1, (RESULT_PREFIX + json.dumps(payload) + "\n").encode())  # one write: lines of ranks never interleave


def parse_args(argv: list[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m disco_zoo.runtime.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="JSON file written by disco_zoo.runtime.launch")
    parser.add_argument("--entry", help="package.module:function, called as function(transport, **args)")
    parser.add_argument("--args", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--backend", default=None, choices=("mpi", "gloo"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a peer")
    parser.add_argument("--wire-dtype", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--bandwidth", default=None, help="emulated link, e.g. 100mbit")
    parser.add_argument("--latency", default=None, help="emulated one-way latency, e.g. 2ms")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--out-dir", default=None, help="write rank<k>.json here instead of stdout")
    ns = parser.parse_args(argv)
    if ns.spec:
        spec = json.loads(Path(ns.spec).read_text())
        if ns.backend:
            spec["backend"] = ns.backend
        return spec
    if not ns.entry:
        parser.error("--entry or --spec is required")
    from disco_zoo.runtime.link import LinkProfile

    link = LinkProfile.parse(ns.bandwidth, ns.latency)
    backend = ns.backend or ("gloo" if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ else "mpi")
    return {
        "entry": ns.entry, "args": json.loads(ns.args), "backend": backend, "timeout_s": ns.timeout,
        "wire_dtype": ns.wire_dtype, "link": None if link.is_ideal else link.to_dict(),
        "threads_per_rank": ns.threads, "out_dir": ns.out_dir,
    }


def main(argv: list[str] | None = None) -> None:
    spec = parse_args(argv)
    rank = _rank_hint()
    try:
        rank, result, transport = run(spec)
    except BaseException as err:  # record, then leave at once: peers may be gone
        from disco_zoo.runtime.errors import PeerError

        payload = {
            "ok": False,
            "error": f"{type(err).__name__}: {err}" if not isinstance(err, PeerError) else str(err),
            "type": type(err).__name__,
            "peer": getattr(err, "rank", None) if isinstance(err, PeerError) else None,
            "tag": getattr(err, "tag", None),
            "traceback": traceback.format_exc(limit=8),
        }
        try:
            _record(spec, rank, payload)
        finally:
            sys.stderr.write(payload["traceback"])
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
    _record(spec, rank, {"ok": True, "result": result})
    transport.close()


if __name__ == "__main__":
    main()
