"""``disco-zoo run``: one distributed DISCO inference, one process per node.

MODEL is a DISCO shard folder (``node{k}.safetensors`` + ``config.json``) or a model
name with published weights: a DISCO variant runs its shards; a dense model is split
with ``--nodes`` (masks open, i.e. dense within-layer parallelism). ``--untrained`` runs
a registered architecture with random weights instead, which is what you want for
latency and traffic, not for predictions; the output says so. An image given with
``--input`` is preprocessed as the model's own config says (input size, mean, std).
"""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:
    from disco_zoo.store import FolderConfig


class Backend(str, Enum):
    mpi = "mpi"
    gloo = "gloo"


class WireDType(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


def _check_nodes(label: str, have: int, nodes: int | None) -> None:
    from disco_zoo.commands.options import check_nodes

    check_nodes(label, have, nodes)


def input_side(config: FolderConfig, input_size: int | None) -> int:
    """The image side a run uses: ``--input-size`` if given (refused for a model with a
    fixed input size that differs), else the folder config's."""
    from disco_zoo.errors import DiscoZooError

    side = input_size or config.input_size[-1]
    if config.fixed_input_size and side != config.input_size[-1]:
        raise DiscoZooError(f"{config.name} takes only {config.input_size[-1]}x{config.input_size[-1]} inputs "
                            f"(fixed input size); drop --input-size {side}")
    return side


def prepare_folder(model: str, nodes: int | None, scratch: Path, untrained: bool = False) -> tuple[Path, str]:
    """(shard folder, how the weights were found) for MODEL."""
    from disco_zoo.disco.adapters import find_partition, to_disco
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.hub import is_model_path
    from disco_zoo.store import load_folder_config

    if is_model_path(model):
        from disco_zoo.hub import resolve_folder

        path = resolve_folder(model)
        config = load_folder_config(path)
        if config.kind == "disco":
            _check_nodes(str(path), config.nodes, nodes)
            return path, "shards"
        from disco_zoo.hub import load_folder

        built, weights = load_folder(path), f"{config.name} (dense, split with masks open)"
    elif untrained:
        from disco_zoo.registry import build_model, split_name

        built, weights = build_model(split_name(model)[0]), "UNTRAINED random weights (--untrained)"
    else:
        from disco_zoo.hub import folder_name, resolve_folder

        folder = resolve_folder(model, node=0)  # the root's files; each rank fetches its own
        config = load_folder_config(folder)
        if config.kind == "disco":
            _check_nodes(config.name, config.nodes, nodes)
            return folder, f"pretrained shards {config.name}"
        from disco_zoo.hub import load_folder

        built, weights = load_folder(folder), f"{folder_name(model)} (dense, split with masks open)"
    part = find_partition(built)
    if part is None:
        built = to_disco(built, nodes or 2)
    else:
        _check_nodes(model, part.nodes, nodes)
    extra = _metadata(built.pretrained_cfg, model)
    folder = scratch / "shards"
    save_shards(built, folder, extra=extra)
    return folder, weights


def _metadata(cfg: Any, model: str) -> dict[str, Any]:
    """config.json keys for a model split on the fly: its pretrained folder's, or for an
    untrained build the architecture's own data config (timm's ``pretrained_cfg``)."""
    from disco_zoo.registry import get_entry
    from disco_zoo.store import FolderConfig

    if isinstance(cfg, FolderConfig):
        keys = ("arch", "args", "tag", "task", "dataset", "input_size", "fixed_input_size", "mean", "std",
                "interpolation", "crop_pct", "class_names")
        return {k: v for k, v in cfg.to_dict().items() if k in keys}
    entry = get_entry(model)
    return {"arch": entry.arch, "args": {}, "tag": "untrained", "task": entry.task,
            "input_size": list(cfg.get("input_size", (3, 224, 224))), "fixed_input_size": bool(cfg.get("fixed_input_size")),
            "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))), "std": list(cfg.get("std", (0.229, 0.224, 0.225)))}


def image_tensor(image: Path, config: Any, size: int, scratch: Path) -> Path:
    """IMAGE preprocessed as the model's config says (its transform at ``size``), saved as
    a (1, C, size, size) .npy for rank 0."""
    import dataclasses

    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from disco_zoo.api import create_transform
    from disco_zoo.errors import DiscoZooError

    if size != config.input_size[-1]:
        config = dataclasses.replace(config, input_size=(config.input_size[0], size, size))
    try:
        with Image.open(image) as handle:
            pixels = handle.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DiscoZooError(f"cannot read image {image}: {err}") from None
    x = create_transform(config)(pixels).numpy()
    path = scratch / "input.npy"
    np.save(path, x[None].astype(np.float32))
    return path


def run_report(
    model: str, nodes: int | None = None, backend: str = "mpi", bandwidth: str | None = None,
    latency: str | None = None, image: Path | None = None, input_size: int | None = None,
    wire_dtype: str = "fp32", timeout_s: float = 60.0, warmup: int = 0, repeats: int = 1, threads: int = 1,
    untrained: bool = False, engine: str = "torch", keep_output: bool = False,
) -> dict[str, Any]:
    """Run MODEL distributed and return the JSON-able report ``run`` prints
    (``keep_output``: plus the model's whole output, under ``"output"``, not JSON-able).

    ``engine`` is 'torch', 'onnx' (every node exported, run by the lean onnxruntime
    runner) or one engine per rank, comma-separated (``torch,onnx``)."""
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.runtime.launch import launch
    from disco_zoo.runtime.transport import ByteCounter
    from disco_zoo.store import load_folder_config
    from disco_zoo.timing.links import Link

    link = Link.parse(bandwidth, latency)
    from disco_zoo.runtime.lifetime import temporary_directory

    with temporary_directory(prefix="disco-zoo-run-") as scratch:
        folder, weights = prepare_folder(model, nodes, scratch, untrained)
        config = load_folder_config(folder)
        size = input_side(config, input_size)
        world = config.nodes
        source = str(folder)
        from disco_zoo.hub import folder_name, is_model_path

        if config.kind == "disco" and not untrained and not is_model_path(model) and folder.parent != scratch:
            source = folder_name(model)  # published: each rank resolves (downloads) its own node only
        args: dict[str, Any] = {"folder": source, "input_shape": [1, config.input_size[0], size, size],
                                "warmup": warmup, "repeats": repeats}
        if image is not None:
            args["input_path"] = str(image_tensor(image, config, size, scratch))
        entry: str | list[str] = "disco_zoo.runtime.disco_executor:run_disco"
        engines = _engines(engine, world)
        if "onnx" in engines:
            if backend != "mpi":
                raise DiscoZooError(f"--engine {engine}: onnx ranks talk MPI only; drop --backend {backend}")
            entry = _onnx_args(args, engines, folder, scratch)
        results = launch(
            entry, world, backend, args=args, timeout_s=timeout_s,
            threads_per_rank=threads, link=link, wire_dtype=wire_dtype,
        )
    merged = ByteCounter.merge([r["bytes"] for r in results])
    from disco_zoo.runtime.session import OUTPUT_KEY, decode_output

    from disco_zoo.tasks import task_of

    task = task_of(config)
    output = decode_output(next(r[OUTPUT_KEY] for r in results if OUTPUT_KEY in r))
    report = {
        "model": model, "weights": weights, "nodes": world, "engines": engines, "backend": backend,
        "wire_dtype": wire_dtype,
        "link": link.to_dict(), "input": str(image) if image else "random", "input_size": size,
        "task": task.name, **task.summary(output),
        "ranks": [
            {"rank": r["rank"], "engine": r.get("engine", "torch"), "load_s": r["load_s"], "time_s": min(r["times_s"]), "times_s": r["times_s"],
             "bytes_sent": sum(r["bytes"]["pairs"].values()), "params": r["params"], "weight_mib": r["weight_bytes"] / 2**20, "peak_rss_mib": r["maxrss_kb"] / 1024}
            for r in results
        ],
        "bytes_total": sum(merged["pairs"].values()),
        "bytes_per_pair": {f"{s}->{d}": n for (s, d), n in sorted(merged["pairs"].items())},
    }
    if keep_output:
        report["output"] = output
    return report


def _engines(engine: str, world: int) -> list[str]:
    from disco_zoo.export.engines import parse_engines

    return parse_engines(engine, world)


def _onnx_args(args: dict[str, Any], engines: list[str], folder: Path, scratch: Path) -> list[str]:
    """Export the model for the run's input shape, give every rank the input as a .npy
    (the torch engine's seeded input, so the engines see the same image) and return
    each rank's launch entry."""
    import numpy as np

    from disco_zoo.export.engines import check_root_engine, rank_entries
    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.runtime.session import seeded_input

    export_onnx(folder, scratch / "onnx", args["input_shape"])
    check_root_engine(engines, scratch / "onnx")
    args["program"] = str(scratch / "onnx")
    if "input_path" not in args:
        np.save(scratch / "input.npy", seeded_input(args["input_shape"], 0).numpy())
        args["input_path"] = str(scratch / "input.npy")
    return rank_entries(engines)


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 160)
    link = report["link"]
    shaped = "no link emulation" if not (link["bandwidth_bps"] or link["latency_s"]) else (
        f"link {link['bandwidth_bps'] / 1e6 if link['bandwidth_bps'] else float('inf'):g} Mbit/s, {link['latency_s'] * 1e3:g} ms")
    console.print(
        f"{report['model']} ({report['weights']}) on {report['nodes']} nodes ({','.join(report['engines'])}) over {report['backend']}, "
        f"{report['wire_dtype']} on the wire, {shaped}; input {report['input']} {report['input_size']}px"
    )
    from disco_zoo.tasks import get_task

    console.print(get_task(report["task"]).summary_line(report))
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
    model: str = typer.Argument(..., help="DISCO shard folder or published model name (e.g. resnet18-disco-2node, resnet18.digits)."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2, help="Nodes (for models converted on the fly; default 2)."),
    backend: Backend = typer.Option(Backend.mpi, "--backend", help="mpi (mpiexec) or gloo (torch.distributed)."),
    bandwidth: Optional[str] = typer.Option(None, "--bandwidth", help="Emulated link bandwidth, e.g. 100mbit."),
    latency: Optional[str] = typer.Option(None, "--latency", help="Emulated one-way link latency, e.g. 2ms."),
    image: Optional[Path] = typer.Option(None, "--input", help="An image file to classify."),
    random_input: bool = typer.Option(False, "--random", help="A random input (the default without --input)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="Square input side (default: the model's)."),
    untrained: bool = typer.Option(False, "--untrained", help="Run a registered architecture with random weights (latency and traffic only)."),
    wire_dtype: WireDType = typer.Option(WireDType.fp32, "--wire-dtype", help="Activation dtype on the wire."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Timed inferences (the fastest is reported)."),
    warmup: int = typer.Option(0, "--warmup", min=0, help="Untimed inferences first."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for a peer before failing."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout instead of the table."),
    engine: str = typer.Option("torch", "--engine", help="torch, onnx (exported, run on onnxruntime without torch), "
                               "or one per rank, e.g. torch,onnx."),
) -> None:
    """Run MODEL split across processes (one per node) and report time, bytes and memory per rank."""
    from disco_zoo.commands.options import check_timeout
    from disco_zoo.errors import DiscoZooError

    if image is not None and random_input:
        raise DiscoZooError("pass --input IMAGE or --random, not both")
    check_timeout(timeout)
    if image is not None and not image.is_file():
        raise DiscoZooError(f"--input {image}: no such file")
    report = run_report(
        model, nodes, backend.value, bandwidth, latency, image, input_size, wire_dtype.value, timeout, warmup, repeats,
        untrained=untrained, engine=engine,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print(report)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
