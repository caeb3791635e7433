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


def model_report(name: str, nodes: int | None, input_size: int | None, dtype: str) -> dict[str, Any]:
    """Everything ``info`` shows, as one JSON-able document (used by ``--json`` and tests).

    The input size and class count are the model's own (its pretrained folder's config,
    or the built architecture's ``pretrained_cfg``) unless ``input_size`` overrides them.
    """
    from disco_zoo.disco.adapters import find_partition
    from disco_zoo.graph import trace_model
    from disco_zoo.graph.accounting import dense_tp_traffic

    model, masks, label = _model_for_report(name)
    size = input_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    dtype_bytes = DTYPE_BYTES[dtype]
    shape = (1, 3, size, size)
    graph = trace_model(model, shape, dtype_bytes=dtype_bytes)
    report: dict[str, Any] = {"model": label, "input_size": size, "dtype": dtype}
    part = find_partition(model)
    if part is not None:
        from disco_zoo.disco.accounting import disco_accounting

        from disco_zoo.commands.options import check_nodes

        nodes = check_nodes(label, part.nodes, nodes)
        acc = disco_accounting(model, shape, dtype_bytes).to_json()
        report.update(masks=masks, **{k: acc[k] for k in _DISCO_KEYS})
    traffic = dense_tp_traffic(graph, nodes or 2, ratios=part.ratios if part is not None else None)
    report.update(
        nodes=nodes or 2,
        num_classes=model.pretrained_cfg.get("num_classes"),
        params=graph.total_params,
        flops=graph.total_flops,
        dense_tp_bytes=traffic.total,
        dense_tp_bytes_per_pair={f"{j}->{k}": b for (j, k), b in sorted(traffic.per_pair.items())},
        layers=[{**layer.to_dict(), "dense_tp_bytes": traffic.per_layer.get(layer.name, 0)} for layer in graph],
    )
    return report


_DISCO_KEYS = ("disco_bytes", "traffic_ratio", "bytes_per_pair", "input_bytes_per_pair", "flops_total",
               "flops_per_node", "params_per_node", "params_bytes_per_node", "act_peak_per_node")


def _model_for_report(name: str) -> tuple[Any, str, str]:
    """(model, what its masks are, its name): ``arch.tag`` (or a folder's path) is that folder; a
    bare DISCO arch uses its default published masks when there are any (untrained
    masks are all open); any other bare arch is the untrained architecture."""
    from disco_zoo.disco.adapters import find_partition
    from disco_zoo.hub import folder_name, is_model_path, load, published_folders
    from disco_zoo.registry import build_model, get_entry, split_name

    if is_model_path(name) or split_name(name)[1]:
        model = load(name)
        return model, f"pretrained ({model.pretrained_cfg.tag})", model.pretrained_cfg.name
    entry = get_entry(name)
    model = build_model(entry.arch)
    if find_partition(model) is None:
        return model, "dense", entry.arch
    if any(n.partition(".")[0] == entry.arch for n in published_folders()):
        model = load(folder_name(entry.arch))
        return model, f"pretrained ({model.pretrained_cfg.tag})", model.pretrained_cfg.name
    return model, "all open (untrained)", entry.arch


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
    model: str = typer.Argument(..., help="Model name (resnet50, resnet50-disco-2node) or a model folder's path."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2,
                                        help="Nodes for the within-layer parallel traffic (default: the model's, else 2)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", min=8, help="Square input side (default: the model's)."),
    dtype: DType = typer.Option(DType.fp32, "--dtype", help="Activation dtype for byte counts."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout instead of the table."),
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
