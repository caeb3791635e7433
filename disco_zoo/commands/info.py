"""``disco-zoo info``: per-layer table and totals (params, FLOPs, bytes, dense-parallel traffic)."""
from __future__ import annotations

import json
from enum import Enum
from typing import Any, Optional

import typer

DTYPE_BYTES = {"fp32": 4, "fp16": 2}


class DType(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"


def model_report(name: str, nodes: int, input_size: int | None, dtype: str) -> dict[str, Any]:
    """Everything ``info`` shows, as one JSON-able document (used by ``--json`` and tests)."""
    from disco_zoo.graph import trace_model
    from disco_zoo.graph.accounting import dense_tp_traffic
    from disco_zoo.registry import create_model, get_entry

    entry = get_entry(name)
    model, masks = _model_for_report(name)
    size = input_size or int(entry.kwargs.get("img_size", 224))
    dtype_bytes = DTYPE_BYTES[dtype]
    shape = (1, 3, size, size)
    graph = trace_model(model, shape, dtype_bytes=dtype_bytes)
    report: dict[str, Any] = {"model": entry.arch, "input_size": size, "dtype": dtype}
    if entry.source == "disco":
        from disco_zoo.disco.accounting import disco_accounting

        acc = disco_accounting(model, shape, dtype_bytes)
        nodes = len(acc["flops_per_node"])
        report.update(masks=masks, **{k: acc[k] for k in _DISCO_KEYS})
        report["bytes_per_pair"] = {f"{j}->{k}": b for (j, k), b in sorted(acc["bytes_per_pair"].items())}
    traffic = dense_tp_traffic(graph, nodes, ratios=_ratios(model))
    report.update(
        nodes=nodes,
        params=graph.total_params,
        flops=graph.total_flops,
        dense_tp_bytes=traffic.total,
        dense_tp_bytes_per_pair={f"{j}->{k}": b for (j, k), b in sorted(traffic.per_pair.items())},
        layers=[{**layer.to_dict(), "dense_tp_bytes": traffic.per_layer.get(layer.name, 0)} for layer in graph],
    )
    return report


_DISCO_KEYS = ("disco_bytes", "traffic_ratio", "flops_total", "flops_per_node", "params_per_node", "act_peak_per_node")


def _model_for_report(name: str) -> tuple[Any, str]:
    """A DISCO model with its published masks when the hub has them, else masks all open."""
    from disco_zoo.hub import HubError
    from disco_zoo.registry import create_model, get_entry, split_name

    entry = get_entry(name)
    if entry.source == "disco" and entry.pretrained:
        try:
            tag = split_name(name)[1] or entry.default_tag
            return create_model(f"{entry.arch}.{tag}", pretrained=True), f"pretrained ({tag})"
        except HubError:
            pass
    return create_model(name), "all open (untrained)" if entry.source == "disco" else "dense"


def _ratios(model: Any) -> list[float] | None:
    """The DISCO partition's split ratios, so the dense baseline splits channels alike."""
    from disco_zoo.disco.adapters import get_partition
    from disco_zoo.errors import DiscoZooError

    try:
        return list(get_partition(model).ratios)
    except DiscoZooError:  # a dense model has no partition
        return None


def _print_table(report: dict[str, Any], all_layers: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    shown_ops = None if all_layers else {"input", "conv", "linear", "add", "concat", "attention", "pool", "output"}
    table = Table(title=f"{report['model']} @ {report['input_size']}x{report['input_size']}, {report['dtype']}")
    for column in ("layer", "op", "inputs from", "output shape", "params", "MFLOPs", "out bytes", "dense TP bytes"):
        table.add_column(column, justify="right" if column in ("params", "MFLOPs", "out bytes", "dense TP bytes") else "left")
    for layer in report["layers"]:
        if shown_ops is not None and layer["op"] not in shown_ops:
            continue
        preds = layer["predecessors"]
        table.add_row(
            layer["name"],
            layer["op"],
            ", ".join(preds) if len(preds) <= 2 else f"{preds[0]} +{len(preds) - 1}",
            "x".join(map(str, layer["output_shape"])),
            f"{layer['params']:,}",
            f"{layer['flops'] / 1e6:,.1f}",
            f"{layer['output_bytes']:,}",
            f"{layer['dense_tp_bytes']:,}",
        )
    console = Console(width=None if Console().is_terminal else 160)
    console.print(table)
    if "disco_bytes" in report:
        console.print(
            f"DISCO ({report['masks']}): {report['disco_bytes']:,} bytes per inference, "
            f"{report['traffic_ratio']:.3f} of dense within-layer parallelism "
            f"({1 / max(report['traffic_ratio'], 1e-12):.1f}x less); FLOPs per node "
            + ", ".join(f"{f / 1e9:.3f}G" for f in report["flops_per_node"])
            + "; params per node " + ", ".join(f"{p:,}" for p in report["params_per_node"])
        )
    console.print(
        f"params {report['params']:,} | GFLOPs {report['flops'] / 1e9:.3f} (FlopCounterMode: 2 per multiply-add) | "
        f"dense within-layer parallel traffic at {report['nodes']} nodes: "
        f"{report['dense_tp_bytes']:,} bytes ({report['dense_tp_bytes'] / 2**20:.2f} MiB) per inference"
    )


def info_command(
    model: str = typer.Argument(..., help="Model name, e.g. resnet50 or resnet50-disco-2node."),
    nodes: int = typer.Option(2, "--nodes", "-n", min=1, help="Nodes for the within-layer parallel traffic."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="Square input side (default: the model's)."),
    dtype: DType = typer.Option(DType.fp32, "--dtype", help="Activation dtype for byte counts."),
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable JSON document instead."),
    all_layers: bool = typer.Option(False, "--all-layers", help="Show every layer, not only conv/linear/merges."),
) -> None:
    """Per-layer shapes, params, FLOPs and bytes of MODEL, and the dense within-layer parallel traffic."""
    report = model_report(model, nodes, input_size, dtype.value)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        _print_table(report, all_layers)


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)
