"""Per-rank entry: ``python -m disco_zoo.runtime.worker``.

Started by our launcher (``--spec FILE``) or directly by a multi-host launcher:

    mpiexec -hosts localhost -n 2 python -m disco_zoo.runtime.worker \\
        --entry disco_zoo.runtime.selftest:ping --args '{"size": 1024}'
    torchrun --nnodes 1 --nproc-per-node 2 --master-addr 127.0.0.1 --master-port 29511 \\
        -m disco_zoo.runtime.worker --backend gloo --entry disco_zoo.runtime.selftest:ping

(give torchrun a free ``--master-port``: with port 0 its workers are told to connect to
port 0). Across hosts: ``mpiexec -hosts h1,h2 -n 2 ...`` or torchrun with ``--nnodes 2
--node-rank R --master-addr H1`` on each host; every host needs the same environment and
its node's shard file. Name the network the ranks use with ``--iface IFACE`` (or
``DISCO_ZOO_IFACE``), and hydra's with ``mpiexec -iface IFACE``: nothing on it is
authenticated (docs/CONTRACTS.md, "Trust model").

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


def rank_entry(entry: str | list[str], rank: int) -> str:
    """This rank's entry: ``entry``, or its ``rank``-th item when ranks run different
    engines (a list, e.g. rank 0 on torch, rank 1 on onnxruntime)."""
    return entry[rank] if isinstance(entry, list) else entry


def write_json_atomic(path: Path, data: Any) -> None:
    """Write then rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def bind_interface(spec: dict[str, Any]) -> None:
    """Across hosts, keep the backend's sockets on the interface the user named
    (``--iface`` / ``DISCO_ZOO_IFACE``): gloo's pairs via GLOO_SOCKET_IFNAME, MPI's (UCX or
    libfabric TCP) via UCX_NET_DEVICES / FI_TCP_IFACE. mpiexec's own control port is
    hydra's: pass it ``-iface`` too."""
    iface = spec.get("iface")
    if not iface:
        return
    if spec["backend"] == "gloo":
        os.environ["GLOO_SOCKET_IFNAME"] = iface
    else:
        os.environ["UCX_NET_DEVICES"] = iface
        os.environ["FI_TCP_IFACE"] = iface


def make_transport(spec: dict[str, Any], board: Any = None):
    """The backend named in ``spec`` wrapped in a Transport with its link and wire dtype
    (``board``: the rank's WaitBoard, when a launcher watches it)."""
    from disco_zoo.runtime.transport import Transport
    from disco_zoo.timing.links import Link

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
        links = {(src, dst): Link(**profile) for src, dst, profile in link}
    else:
        links = Link(**link) if link else None
    return Transport(backend, wire_dtype=spec.get("wire_dtype", "fp32"), links=links, timeout_s=spec["timeout_s"],
                     board=board)


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
    board = None
    if out_dir:
        from disco_zoo.runtime.rank_status import WaitBoard

        (out_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
        board = WaitBoard(out_dir / f"rank{rank}.wait")
    function = resolve_entry(rank_entry(spec["entry"], rank))
    # an entry whose module brings its own make_transport runs without torch (the lean onnx runner)
    own_transport = getattr(sys.modules[function.__module__], "make_transport", None)
    if own_transport is None:
        import torch

        torch.set_num_threads(int(spec.get("threads_per_rank", 1)))
    bind_interface(spec)
    transport = (own_transport or make_transport)(spec, board)
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
    parser.add_argument("--iface", default=os.environ.get("DISCO_ZOO_IFACE"),
                        help="network interface the backend binds across hosts (default: $DISCO_ZOO_IFACE)")
    ns = parser.parse_args(argv)
    if ns.spec:
        spec = json.loads(Path(ns.spec).read_text())
        if ns.backend:
            spec["backend"] = ns.backend
        return spec
    if not ns.entry:
        parser.error("--entry or --spec is required")
    from disco_zoo.timing.links import Link

    link = Link.parse(ns.bandwidth, ns.latency)
    backend = ns.backend or ("gloo" if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_WORLD_SIZE" in os.environ else "mpi")
    return {
        "entry": ns.entry, "args": json.loads(ns.args), "backend": backend, "timeout_s": ns.timeout,
        "wire_dtype": ns.wire_dtype, "link": None if link.is_ideal else link.to_dict(),
        "threads_per_rank": ns.threads, "out_dir": ns.out_dir, "iface": ns.iface,
    }


def _supervise() -> None:
    """Under our launcher: die with the parent (the launcher, or mpiexec), and leave
    stopping to the launcher, which SIGKILLs every rank. mpiexec's SIGINT/SIGQUIT to the
    survivors of a dead rank are ignored, so the launcher sees which rank died first."""
    import signal

    from disco_zoo.runtime.lifetime import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> None:
    spec = parse_args(argv)
    rank = _rank_hint()
    if spec.get("supervised"):
        _supervise()
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
            if not spec.get("supervised"):  # the launcher keeps it in the run's log instead
                sys.stderr.write(payload["traceback"])
                sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
    _record(spec, rank, {"ok": True, "result": result})
    transport.close()


if __name__ == "__main__":
    main()
