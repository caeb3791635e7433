"""``disco-zoo sparsify``: train a model's DISCO connectivity to a traffic budget.

Group lasso on cross-node channels, prune to ``--traffic`` x dense within-layer
traffic (optionally to a ``--params`` per-node storage budget and a ``--compute`` FLOPs
budget), fine-tune with masks frozen, then write one safetensors shard per node and
config.json (partition, metrics, accounting).
Start from trained dense weights with ``--init``: a folder written by ``disco-zoo train``
(path or name; it becomes the dense counterpart ``eval`` compares with), or a timm
checkpoint (a head for other classes is re-initialised).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from disco_zoo.store import FolderConfig
    from disco_zoo.tasks import DatasetInfo


def _ratios(text: Optional[str], nodes: int) -> Optional[list[float]]:
    from disco_zoo.errors import DiscoZooError

    if not text:
        return None
    try:
        ratios = [float(r) for r in text.split(",")]
    except ValueError:
        raise DiscoZooError(f"--ratios must be comma-separated numbers, got {text!r}") from None
    if len(ratios) != nodes:
        raise DiscoZooError(f"--ratios has {len(ratios)} numbers for {nodes} nodes")
    return ratios


def _check_init_fits(init: "FolderConfig", task_name: str, info: "DatasetInfo", folder: str) -> None:
    """The dense weights must answer the same task, with the same classes, as the data."""
    from disco_zoo.data.image_folder import check_classes
    from disco_zoo.errors import DiscoZooError

    if init.task != task_name:
        raise DiscoZooError(f"--init {folder} is a {init.task} model; {task_name} data cannot fine-tune it.")
    if info.class_names is not None:  # the dense counterpart eval compares with answers the same classes
        check_classes(info.class_names, init.class_names, f"--data {info.name}", f"--init {folder}", init.num_classes)


def sparsify_command(
    model: str = typer.Argument(..., help="Registry name: a dense model (resnet18) or a DISCO variant."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", min=2, help="Nodes (a variant's own; a dense model's default 2)."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Unequal split, e.g. '0.6,0.4'."),
    traffic: float = typer.Option(0.2, "--traffic", help="DISCO bytes / dense within-layer-parallel bytes."),
    compute: Optional[float] = typer.Option(
        None, "--compute", help="Optional FLOPs budget (total / dense), met by pruning within diagonal blocks."
    ),
    compute_groups: str = typer.Option(
        "own", "--compute-groups", help="What --compute may close: own (each node's own inputs, the diagonal "
                                        "blocks) or all (cross-node channels too), lowest norm per FLOP first."),
    max_dropped: float = typer.Option(
        0.5, "--max-dropped", min=0.0, max=1.0, help="--compute drops at most this share of a node's own inputs to "
                                                     "any one layer (0: only cross-node channels close)."),
    lasso_flops: bool = typer.Option(
        False, "--lasso-flops", help="The group lasso weighs each cross-node channel's FLOPs next to its bytes, so "
                                     "channels cheap on the wire but costly to compute shrink before --compute."),
    distill: float = typer.Option(
        0.0, "--distill", min=0.0, help="Weight of distillation from the --init dense model (its outputs as soft "
                                        "targets next to the labels); 0: labels only."),
    params: Optional[float] = typer.Option(
        None, "--params", help="Optional per-node storage budget: max node params / dense params (e.g. 0.125)."
    ),
    data: str = typer.Option("digits", "--data", help="'digits' or an ImageFolder root with train/ and val/."),
    init: Optional[str] = typer.Option(
        None, "--init", help="Dense weights to start from: a dense model folder or name (recorded as the dense "
                             "counterpart), or a timm checkpoint (.safetensors, or a folder with model.safetensors)."),
    input_size: int = typer.Option(32, "--input-size", help="Image side in pixels."),
    epochs: int = typer.Option(2, "--epochs", min=0, help="Epochs with the group-lasso penalty."),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs", min=0, help="Epochs with masks frozen."),
    penalty: float = typer.Option(1e-3, "--penalty", help="Group-lasso strength."),
    prune_steps: int = typer.Option(
        1, "--prune-steps", min=1, help="Reach the budgets in this many pruning steps (cubic schedule, masks frozen "
                                        "between steps); 1: prune once after the group lasso."),
    prune_step_epochs: int = typer.Option(1, "--prune-step-epochs", min=0,
                                          help="Epochs of masks-frozen training after each pruning step but the last."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images per split (quick runs)."),
    augment: bool = typer.Option(False, "--augment", help="Augment the training samples as the task offers "
                                                          "(detection: SSD's photometric, zoom-out and IoU crop)."),
    seed: int = typer.Option(0, "--seed"),
    model_args: list[str] = typer.Option(
        [], "--arg", help="Builder argument KEY=VALUE (int/float/true/false/str), repeatable; over the --init "
                          "folder's own arguments."),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and config.json."),
    storage: str = typer.Option("auto", "--storage", help="auto (fp16 when the task's headline test metric is unchanged, else fp32) | fp16 | int8 | fp32."),
    force: bool = typer.Option(False, "--force", help="Replace a published folder (in hub/ or $DISCO_ZOO_HUB) and its card."),
) -> None:
    """Sparsify MODEL's cross-node channels to a traffic budget and export per-node shards.

    The task (its data, loss and metric) is the registry entry's."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from disco_zoo.commands.common import (folder_tag, model_metadata, parse_model_args, read_init, split_metrics,
                                           storage_decision)
    from disco_zoo.commands.options import check_nodes, check_not_published
    from disco_zoo.disco.accounting import disco_accounting
    from disco_zoo.disco.adapters import to_disco
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.disco.sparsify import SparsifyConfig, sparsify
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.hub import HF_ORG
    from disco_zoo.progress import log_line
    from disco_zoo.registry import build_model, get_entry
    from disco_zoo.tasks import task_of
    from disco_zoo.weights import load_pretrained_state

    check_not_published(out, force)
    if distill and init is None:
        raise DiscoZooError("--distill needs --init: the dense weights are the teacher")
    console = Console()
    entry = get_entry(model)
    task = task_of(entry)
    is_variant = entry.source == "disco"
    nodes = check_nodes(entry.arch, int(entry.kwargs.get("nodes", 2)), nodes) if is_variant else (nodes or 2)
    split = _ratios(ratios, nodes)
    train_data = task.train_data(data, input_size, batch_size, seed, limit, augment)
    loaders, info = train_data.loaders, train_data.info

    checkpoint = read_init(init) if init is not None else None
    init_config = checkpoint.config if checkpoint is not None else None
    if init_config is not None:
        _check_init_fits(init_config, task.name, info, init)
    # the dense model's own builder arguments first (as train --init): its weights fit them
    args = {**(checkpoint.args if checkpoint is not None else {}), **train_data.model_args,
            **parse_model_args(model_args)}
    if is_variant:
        args.update(nodes=nodes, ratios=split)
    torch.manual_seed(seed)
    net = build_model(entry.arch, **args)
    if not is_variant:
        net = to_disco(net, nodes, split)
    if checkpoint is not None:
        note = load_pretrained_state(net, checkpoint, info.class_names)
        if note:
            log_line(note)
    cfg = SparsifyConfig(traffic=traffic, penalty=penalty, epochs=epochs, finetune_epochs=finetune_epochs,
                         lr=lr, compute=compute, compute_groups=compute_groups, distill=distill,
                         max_dropped=max_dropped, lasso_flops=lasso_flops,
                         params=params, seed=seed, prune_steps=prune_steps, prune_step_epochs=prune_step_epochs)
    shape = (1, len(info.mean), input_size, input_size)
    stats = sparsify(net, loaders["train"], cfg, shape, show_progress=True, loss=task.training_loss,
                     divergence=task.distillation_divergence(net), distill_outputs_of=task.distillation_outputs)

    metrics = split_metrics(task, net, loaders)
    acc = disco_accounting(net, shape)
    summary = {
        "disco_bytes": acc.disco_bytes, "dense_tp_bytes": acc.dense_tp_bytes, "traffic_ratio": acc.traffic_ratio,
        "flops_total": acc.flops_total, "flops_dense": acc.flops_dense, "flops_per_node": acc.flops_per_node,
        "params_per_node": acc.params_per_node, "act_peak_per_node": acc.act_peak_per_node,
        "bytes_per_pair": {f"{j}->{k}": v for (j, k), v in acc.bytes_per_pair.items()},
    }
    stored_as = storage_decision(storage, task, net, loaders["test"], metrics)
    save_shards(net, out, storage=stored_as, extra={
        "arch": entry.arch,
        "args": args,
        **model_metadata(task, info, net, input_size, folder_tag(out, info)),
        **({"dense": init_config.name} if init_config is not None else {}),
        "hf_hub_id": f"{HF_ORG}/{entry.arch}.{folder_tag(out, info)}",
        "metrics": metrics,
        "accounting": summary,
        "sparsify": {**cfg.__dict__, "init": str(init) if init else None, **stats},
        "recipe": "disco-zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    })

    table = Table(title=f"{entry.arch} DISCO over {nodes} nodes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in task.metrics:
        table.add_row(f"test {metric.label}", metric.format(metrics[f"test_{metric.name}"]))
    table.add_row("bytes / inference (DISCO)", f"{acc.disco_bytes:,}")
    table.add_row("bytes / inference (dense TP)", f"{acc.dense_tp_bytes:,}")
    table.add_row("traffic ratio", f"{acc.traffic_ratio:.4f}")
    table.add_row("FLOPs total / dense", f"{acc.flops_total / acc.flops_dense:.3f}")
    table.add_row("FLOPs per node", ", ".join(f"{f:,}" for f in acc.flops_per_node))
    table.add_row("params per node", ", ".join(f"{p:,}" for p in acc.params_per_node))
    table.add_row("params per node / dense", ", ".join(f"{p / acc.params_dense:.3f}" for p in acc.params_per_node))
    console.print(table)
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("sparsify")(sparsify_command)
