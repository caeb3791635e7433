"""``disco-zoo run``: one distributed DISCO inference, one process per node.

MODEL is a DISCO shard folder (``node{k}.safetensors`` + ``config.json``), a DISCO model
with published shards, or any registered model name: a model without published shards is
converted with ``--nodes`` and run with its untrained weights (masks open), which is what
you want for latency and traffic, not for predictions.
"""
from __future__ import annotations

import json
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer


class Backend(str, Enum):
    mpi = "mpi"
    gloo = "gloo"


class WireDType(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


def prepare_folder(model: str, nodes: int | None, scratch: Path) -> tuple[Path, str, dict[str, Any]]:
    """(shard folder, how the weights were found, registry defaults) for MODEL."""
    from disco_zoo.errors import DiscoZooError

    path = Path(model)
    if (path / "config.json").is_file():
        return path, "shards", {}
    from disco_zoo.disco.adapters import get_partition, to_disco
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.registry import create_model, get_entry, split_name

    entry = get_entry(model)
    if entry.source == "disco" and entry.pretrained:
        from disco_zoo.hub import HubError, resolve_folder

        try:
            folder = resolve_folder(model)
            if json.loads((folder / "config.json").read_text()).get("kind") == "disco":
                return folder, "pretrained shards", entry.kwargs
        except HubError:
            pass
    built = create_model(split_name(model)[0])
    if entry.source != "disco":
        built = to_disco(built, nodes or 2)
    part_nodes = get_partition(built).nodes
    if nodes is not None and nodes != part_nodes:
        raise DiscoZooError(f"{entry.arch} is split over {part_nodes} nodes; drop --nodes or pass --nodes {part_nodes}")
    folder = scratch / "shards"
    save_shards(built, folder, extra={"arch": entry.arch, "args": {}})
    return folder, "untrained weights, masks open", entry.kwargs


def image_tensor(image: Path, size: int, scratch: Path) -> Path:
    """IMAGE resized to size x size, ImageNet-normalised, saved as a (1, 3, size, size) .npy."""
    import numpy as np
    from PIL import Image

    from disco_zoo.errors import DiscoZooError

    try:
        pixels = Image.open(image).convert("RGB").resize((size, size), Image.BILINEAR)
    except OSError as err:
        raise DiscoZooError(f"cannot read image {image}: {err}") from None
    x = np.asarray(pixels, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406])[:, None, None], np.array([0.229, 0.224, 0.225])[:, None, None]
    path = scratch / "input.npy"
    np.save(path, ((x - mean) / std).astype(np.float32)[None])
    return path


def run_report(
    model: str, nodes: int | None = None, backend: str = "mpi", bandwidth: str | None = None,
    latency: str | None = None, image: Path | None = None, input_size: int | None = None,
    wire_dtype: str = "fp32", timeout_s: float = 60.0, warmup: int = 0, repeats: int = 1, threads: int = 1,
) -> dict[str, Any]:
    """Run MODEL distributed and return the JSON-able report ``run`` prints."""
    from disco_zoo.runtime.launch import launch
    from disco_zoo.runtime.link import LinkProfile
    from disco_zoo.runtime.transport import ByteCounter

    link = LinkProfile.parse(bandwidth, latency)
    with tempfile.TemporaryDirectory(prefix="disco-zoo-run-") as tmp:
        scratch = Path(tmp)
        folder, weights, defaults = prepare_folder(model, nodes, scratch)
        config = json.loads((folder / "config.json").read_text())
        size = input_size or int(defaults.get("img_size", config.get("input_size", [3, 224, 224])[-1]))
        world = int(config["nodes"])
        args: dict[str, Any] = {"folder": str(folder), "input_shape": [1, 3, size, size], "warmup": warmup, "repeats": repeats}
        if image is not None:
            args["input_path"] = str(image_tensor(image, size, scratch))
        results = launch(
            "disco_zoo.runtime.disco_executor:run_disco", world, backend, args=args, timeout_s=timeout_s,
            threads_per_rank=threads, link=link, wire_dtype=wire_dtype,
        )
    merged = ByteCounter.merge([r["bytes"] for r in results])
    logits = next(r["logits"] for r in results if "logits" in r)[0]
    top = sorted(range(len(logits)), key=lambda i: -logits[i])[:5]
    return {
        "model": model, "weights": weights, "nodes": world, "backend": backend, "wire_dtype": wire_dtype,
        "link": link.to_dict(), "input": str(image) if image else "random", "input_size": size,
        "top5": [{"class": i, "logit": logits[i]} for i in top],
        "ranks": [
            {"rank": r["rank"], "load_s": r["load_s"], "time_s": min(r["times_s"]), "times_s": r["times_s"],
             "bytes_sent": sum(r["bytes"]["pairs"].values()), "params": r["params"], "weight_mib": r["weight_bytes"] / 2**20, "peak_rss_mib": r["maxrss_kb"] / 1024}
            for r in results
        ],
        "bytes_total": sum(merged["pairs"].values()),
        "bytes_per_pair": {f"{s}->{d}": n for (s, d), n in sorted(merged["pairs"].items())},
    }


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    link = report["link"]
    shaped = "no link emulation" if not (link["bandwidth_bps"] or link["latency_s"]) else (
        f"link {link['bandwidth_bps'] / 1e6 if link['bandwidth_bps'] else float('inf'):g} Mbit/s, {link['latency_s'] * 1e3:g} ms")
    console.print(
        f"{report['model']} ({report['weights']}) on {report['nodes']} nodes over {report['backend']}, "
        f"{report['wire_dtype']} on the wire, {shaped}; input {report['input']} {report['input_size']}px"
    )
    console.print("top-5: " + ", ".join(f"{t['class']} ({t['logit']:.3f})" for t in report["top5"]))
    table = Table()
    for column in ("rank", "load s", "inference ms", "bytes sent", "params", "weights MiB", "peak RSS MiB"):
        table.add_column(column, justify="right")
    for r in report["ranks"]:
        table.add_row(str(r["rank"]), f"{r['load_s']:.2f}", f"{r['time_s'] * 1e3:.1f}", f"{r['bytes_sent']:,}",
                      f"{r['params']:,}", f"{r['weight_mib']:.1f}", f"{r['peak_rss_mib']:.0f}")
    console.print(table)
    console.print("peak RSS is the process's maxrss: the torch + timm import alone is ~0.7 GB here", style="dim")
    console.print(f"bytes per inference: {report['bytes_total']:,} (" + ", ".join(
        f"{pair}: {n:,}" for pair, n in report["bytes_per_pair"].items()) + ")")


def run_command(
    model: str = typer.Argument(..., help="DISCO shard folder or model name (e.g. resnet18_disco_2node, resnet18)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2, help="Nodes (for models converted on the fly; default 2)."),
    backend: Backend = typer.Option(Backend.mpi, "--backend", help="mpi (mpiexec) or gloo (torch.distributed)."),
    bandwidth: Optional[str] = typer.Option(None, "--bandwidth", help="Emulated link bandwidth, e.g. 100mbit."),
    latency: Optional[str] = typer.Option(None, "--latency", help="Emulated one-way link latency, e.g. 2ms."),
    image: Optional[Path] = typer.Option(None, "--input", help="An image file to classify."),
    random_input: bool = typer.Option(False, "--random", help="A random input (the default without --input)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="Square input side (default: the model's)."),
    wire_dtype: WireDType = typer.Option(WireDType.fp32, "--wire-dtype", help="Activation dtype on the wire."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed inferences (the fastest is reported)."),
    warmup: int = typer.Option(0, "--warmup", min=0, help="Untimed inferences first."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a peer before failing."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON document instead."),
) -> None:
    """Run MODEL split across processes (one per node) and report time, bytes and memory per rank."""
    from disco_zoo.errors import DiscoZooError

    if image is not None and random_input:
        raise DiscoZooError("pass --input IMAGE or --random, not both")
    report = run_report(
        model, nodes, backend.value, bandwidth, latency, image, input_size, wire_dtype.value, timeout, warmup, repeats,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print(report)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
