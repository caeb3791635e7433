"""``disco-zoo sparsify``: train a model's DISCO connectivity to a traffic budget.

Group lasso on cross-node channels, prune to ``--traffic`` x dense within-layer
traffic (optionally to a ``--params`` per-node storage budget and a ``--compute`` FLOPs
budget), fine-tune with masks frozen, then write one safetensors shard per node and
config.json (partition, metrics, accounting).
Start from trained dense weights with ``--init`` (a folder written by ``disco-zoo train``).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer


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


def _load_dense_init(model, folder: Path) -> None:
    """Load a dense folder's verified weights into the (masks-open) DISCO model."""
    from safetensors.torch import load_file

    from disco_zoo.errors import DiscoZooError
    from disco_zoo.hub import read_config, verify_folder
    from disco_zoo.weights import DENSE_FILE

    config = read_config(folder)
    if config.get("kind") != "dense":
        raise DiscoZooError(f"--init {folder}: expected a dense model folder (kind 'dense')")
    verify_folder(folder, config)
    state = load_file(str(folder / DENSE_FILE))
    reference = model.state_dict()
    try:
        model.load_state_dict({k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()})
    except RuntimeError as err:
        raise DiscoZooError(f"--init {folder} does not fit this architecture: {err}") from err


def sparsify_command(
    model: str = typer.Argument(..., help="Registry name: a dense model (resnet18) or a DISCO variant."),
    nodes: Optional[int] = typer.Option(None, "--nodes", "-n", help="Nodes (default: the variant's, else 2)."),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="Unequal split, e.g. '0.6,0.4'."),
    traffic: float = typer.Option(0.2, "--traffic", help="DISCO bytes / dense within-layer-parallel bytes."),
    compute: Optional[float] = typer.Option(
        None, "--compute", help="Optional FLOPs budget (total / dense), met by pruning within diagonal blocks."
    ),
    params: Optional[float] = typer.Option(
        None, "--params", help="Optional per-node storage budget: max node params / dense params (e.g. 0.125)."
    ),
    data: str = typer.Option("digits", "--data", help="'digits' or an ImageFolder root with train/ and val/."),
    init: Optional[Path] = typer.Option(None, "--init", help="Dense weights to start from (a hub folder)."),
    input_size: int = typer.Option(32, "--input-size", help="Image side in pixels."),
    epochs: int = typer.Option(2, "--epochs", min=0, help="Epochs with the group-lasso penalty."),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs", min=0, help="Epochs with masks frozen."),
    penalty: float = typer.Option(1e-3, "--penalty", help="Group-lasso strength."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N images per split (quick runs)."),
    seed: int = typer.Option(0, "--seed"),
    model_args: list[str] = typer.Option([], "--arg", help="Builder argument KEY=VALUE, repeatable."),
    out: Path = typer.Option(..., "--out", help="Folder for the shards and config.json."),
    storage: str = typer.Option("auto", "--storage", help="auto (fp16 when test top-1 is unchanged, else fp32) | fp16 | fp32."),
) -> None:
    """Sparsify MODEL's cross-node channels to a traffic budget and export per-node shards."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from disco_zoo.commands.common import parse_model_args, storage_decision
    from disco_zoo.disco.accounting import disco_accounting
    from disco_zoo.disco.adapters import to_disco
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.disco.sparsify import SparsifyConfig, sparsify
    from disco_zoo.registry import create_model, get_entry
    from disco_zoo.train import accuracy

    console = Console()
    entry = get_entry(model)
    is_variant = entry.source == "disco"
    nodes = nodes or (entry.kwargs.get("nodes", 2) if is_variant else 2)
    split = _ratios(ratios, nodes)

    if data == "digits":
        from disco_zoo.data.digits import DIGITS_MEAN, DIGITS_STD, NUM_CLASSES, digits_loaders

        loaders = digits_loaders(input_size, batch_size, seed, limit)
        num_classes, mean, std = NUM_CLASSES, [DIGITS_MEAN] * 3, [DIGITS_STD] * 3
    else:
        from disco_zoo.data.image_folder import IMAGENET_MEAN, IMAGENET_STD, image_folder_loader

        root = Path(data)
        loaders = {
            "train": image_folder_loader(root / "train", input_size, batch_size, train=True, seed=seed),
            "val": image_folder_loader(root / "val", input_size, batch_size),
        }
        loaders["test"] = loaders["val"]
        num_classes, mean, std = len(loaders["train"].dataset.classes), list(IMAGENET_MEAN), list(IMAGENET_STD)

    args = {"num_classes": num_classes, **parse_model_args(model_args)}
    if is_variant:
        args.update(nodes=nodes, ratios=split)
    torch.manual_seed(seed)
    net = create_model(entry.arch, **args)
    if not is_variant:
        net = to_disco(net, nodes, split)
    if init is not None:
        _load_dense_init(net, init)
    cfg = SparsifyConfig(traffic=traffic, penalty=penalty, epochs=epochs, finetune_epochs=finetune_epochs,
                         lr=lr, compute=compute, params=params, seed=seed)
    shape = (1, 3, input_size, input_size)
    stats = sparsify(net, loaders["train"], cfg, shape, show_progress=True)

    metrics = {"val_top1": accuracy(net, loaders["val"]), "test_top1": accuracy(net, loaders["test"])}
    acc = disco_accounting(net, shape)
    summary = {k: acc[k] for k in ("disco_bytes", "dense_tp_bytes", "traffic_ratio", "flops_total", "flops_dense",
                                     "flops_per_node", "params_per_node", "act_peak_per_node")}
    summary["bytes_per_pair"] = {f"{j}->{k}": v for (j, k), v in acc["bytes_per_pair"].items()}
    half = storage_decision(storage, net, loaders["test"], metrics)
    save_shards(net, out, half=half, extra={
        "arch": entry.arch,
        "args": args,
        "dataset": data,
        "input_size": [3, input_size, input_size],
        "mean": mean,
        "std": std,
        "metrics": metrics,
        "accounting": summary,
        "sparsify": {**cfg.__dict__, "init": str(init) if init else None, **stats},
        "recipe": "disco-zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    })

    table = Table(title=f"{entry.arch} DISCO over {nodes} nodes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test top-1", f"{metrics['test_top1']:.4f}")
    table.add_row("bytes / inference (DISCO)", f"{acc['disco_bytes']:,}")
    table.add_row("bytes / inference (dense TP)", f"{acc['dense_tp_bytes']:,}")
    table.add_row("traffic ratio", f"{acc['traffic_ratio']:.4f}")
    table.add_row("FLOPs total / dense", f"{acc['flops_total'] / acc['flops_dense']:.3f}")
    table.add_row("FLOPs per node", ", ".join(f"{f:,}" for f in acc["flops_per_node"]))
    table.add_row("params per node", ", ".join(f"{p:,}" for p in acc["params_per_node"]))
    dense_params = sum(p.numel() for p in net.parameters())
    table.add_row("params per node / dense", ", ".join(f"{p / dense_params:.3f}" for p in acc["params_per_node"]))
    console.print(table)
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("sparsify")(sparsify_command)
