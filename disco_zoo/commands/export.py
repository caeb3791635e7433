"""``disco-zoo export MODEL --format onnx --out DIR``: per-node ONNX programs.

MODEL is what ``run`` takes (a DISCO shard folder, a published name, a dense model split
with ``--nodes``, or ``--untrained``). DIR gets one self-contained folder per node
(``node{k}/``: ONNX segments, ``program.json``, ``config.json``, ``SHA256SUMS``) that
``python -m disco_zoo.edge`` or ``disco-zoo run MODEL --engine onnx`` runs with
onnxruntime and no torch.
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer


class ExportFormat(str, Enum):
    onnx = "onnx"


def export_command(
    model: str = typer.Argument(..., help="DISCO shard folder or published model name (e.g. resnet18-disco-2node)."),
    out: Path = typer.Option(..., "--out", help="Folder to write node0/, node1/, ... into."),
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", help="Export format (onnx)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2, help="Nodes (for models split on the fly)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="Square input side (default: the model's)."),
    batch: int = typer.Option(1, "--batch", min=1, help="Batch size the programs are exported for."),
    untrained: bool = typer.Option(False, "--untrained", help="A registered architecture with random weights."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON on stdout."),
) -> None:
    """Export MODEL as one ONNX program per node (runs on onnxruntime, without torch)."""
    from disco_zoo.commands.options import check_output_path
    from disco_zoo.commands.run import input_side, prepare_folder
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.runtime.lifetime import temporary_directory
    from disco_zoo.store import load_folder_config

    if out.exists() and not out.is_dir():
        raise DiscoZooError(f"--out {out} is a file; give a folder path")
    check_output_path(out / "node0", "--out")
    with temporary_directory(prefix="disco-zoo-export-") as scratch:
        folder, weights = prepare_folder(model, nodes, scratch, untrained)
        config = load_folder_config(folder)
        size = input_side(config, input_size)
        shape = [batch, config.input_size[0], size, size]
        written = export_onnx(folder, out, shape)
    report = {"model": model, "weights": weights, "format": format.value, "input_shape": shape,
              "nodes": [str(p) for p in written]}
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        typer.echo(f"{model} ({weights}) exported for input {shape}: " + ", ".join(report["nodes"]))


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
