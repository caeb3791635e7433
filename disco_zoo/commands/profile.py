"""``disco-zoo profile``: measure this machine's compute rate and write a device entry."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from disco_zoo.runtime.host_rate import device_entry, measure_rates


def profile_command(
    name: str = typer.Option("this-host", "--name", help="Device name to record."),
    out: Optional[str] = typer.Option(None, "--out", help="Append the device to this profile JSON (created if absent)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads while measuring."),
    memory: Optional[int] = typer.Option(None, "--memory-bytes", help="Memory to record for the device."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per kernel (best is kept)."),
) -> None:
    """Measure this machine's FLOP/s and print (or add to a profile) a device entry."""
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.planner.profiles import profile_from_dict

    entry = device_entry(name, measure_rates(repeats, threads), memory)
    if not out:
        typer.echo(json.dumps(entry, indent=1))
        return
    path = Path(out)
    doc = json.loads(path.read_text()) if path.exists() else {
        "name": path.stem, "devices": [], "links": {"default": {"bandwidth_bps": 1e9, "latency_s": 1e-4}}}
    if any(d.get("name") == name for d in doc.get("devices", [])):
        raise DiscoZooError(f"{out} already has a device named {name!r}; pick another --name")
    doc.setdefault("devices", []).append(entry)
    profile_from_dict(doc, str(path))  # never write a file the planner would reject
    path.write_text(json.dumps(doc, indent=2))
    typer.echo(f"added {name} ({entry['flops'] / 1e9:.1f} GFLOP/s conv) to {out}")


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)
