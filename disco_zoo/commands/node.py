"""``disco-zoo node``: one device's rank of a distributed model, serving until the root stops.

Every device but the root runs this with its own rank; the application on the root device
opens ``disco_zoo.distributed(MODEL, launch=False, master_addr=ROOT, master_port=PORT)``,
whose rank 0 hosts the gloo rendezvous. This rank loads only its own shard (a published
name downloads only ``config.json``, the card and ``node{K}.safetensors``) and then serves
call after call (:mod:`disco_zoo.runtime.service`) until the application closes the model.
gloo only: MPI cannot attach processes started separately.
"""
from __future__ import annotations

import os
from typing import Optional

import typer


def node_command(
    model: str = typer.Argument(..., help="Published DISCO model name or DISCO folder (the same on every device)."),
    rank: int = typer.Option(..., "--rank", min=1, help="This device's node, 1..N-1 (rank 0 is the application's)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2, help="Nodes in all (checked against MODEL's)."),
    master_addr: str = typer.Option("127.0.0.1", "--master-addr", help="The root device's address (its rendezvous)."),
    master_port: int = typer.Option(..., "--master-port", min=1, max=65535, help="The root's rendezvous port."),
    iface: Optional[str] = typer.Option(None, "--iface", help="Network interface gloo binds (default: $DISCO_ZOO_IFACE)."),
    wire_dtype: str = typer.Option("fp32", "--wire-dtype", help="Activation dtype on the wire (as the root's)."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the root to appear and for each message."),
    idle_timeout: float = typer.Option(24 * 3600.0, "--idle-timeout", help="Seconds to wait for the next call."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads."),
) -> None:
    """Serve one rank of MODEL for an application on the root device (gloo, across hosts)."""
    # a node started before its root: c10d would log every retry of the rendezvous with a
    # C++ stack; the outcome is ours to say, in one line (set the variable to see them)
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
    from disco_zoo.commands.options import check_nodes, check_timeout
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.runtime.disco_executor import node_folder
    from disco_zoo.runtime.errors import RendezvousError
    from disco_zoo.runtime.service import SERVE_ENTRY
    from disco_zoo.runtime.transport import WIRE_DTYPES
    from disco_zoo.runtime.worker import run
    from disco_zoo.store import load_folder_config

    check_timeout(timeout)
    check_timeout(idle_timeout, "--idle-timeout")
    if wire_dtype not in WIRE_DTYPES:
        raise DiscoZooError(f"--wire-dtype must be one of {', '.join(WIRE_DTYPES)}, got {wire_dtype!r}")
    config = load_folder_config(node_folder(model, rank))
    if config.kind != "disco":
        raise DiscoZooError(f"{config.name} is a dense model: a node serves a DISCO model's shard")
    check_nodes(config.name, config.nodes, nodes)
    if rank >= config.nodes:
        raise DiscoZooError(f"--rank {rank}: {config.name} has nodes 0..{config.nodes - 1}")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(config.nodes), MASTER_ADDR=master_addr,
                      MASTER_PORT=str(master_port))
    spec = {"entry": SERVE_ENTRY, "backend": "gloo", "timeout_s": timeout, "wire_dtype": wire_dtype,
            "threads_per_rank": threads, "iface": iface or os.environ.get("DISCO_ZOO_IFACE"),
            "args": {"folder": model, "idle_timeout_s": idle_timeout}}
    typer.echo(f"node {rank} of {config.name}: waiting for the root at {master_addr}:{master_port}", err=True)
    try:
        _, result, transport = run(spec)
    except RendezvousError as err:
        raise DiscoZooError(f"{str(err).rstrip('.')}; is the application on {master_addr} running disco_zoo.distributed(..., "
                            f"launch=False, master_port={master_port}), started within --timeout {timeout:g} s?") from None
    transport.close()
    typer.echo(f"node {rank} of {config.name}: served {result['calls']} calls; the root closed the model", err=True)


def register(app: typer.Typer) -> None:
    app.command("node")(node_command)
