"""``disco-zoo train``: train a dense model on its task's data and publish it to a hub folder."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer


def train_command(
    model: str = typer.Argument(..., help="Dense architecture, e.g. resnet50."),
    data: str = typer.Option("digits", "--data", help="'digits' (embedded) or an ImageFolder root with train/ and val/."),
    epochs: int = typer.Option(15, "--epochs", min=1),
    lr: float = typer.Option(2e-3, "--lr"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    input_size: int = typer.Option(32, "--input-size", min=8),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", min=1, help="torch intra-op threads."),
    storage: str = typer.Option("auto", "--storage", help="auto (fp16 when test top-1 is unchanged, else fp32) | fp16 | fp32."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: $DISCO_ZOO_HUB or hub/, <arch>.<data>)."),
    force: bool = typer.Option(False, "--force", help="Replace a published folder (in hub/ or $DISCO_ZOO_HUB) and its card."),
    model_args: list[str] = typer.Option([], "--arg", help="Builder argument KEY=VALUE (int/float/str), repeatable."),
) -> None:
    """Train MODEL from scratch on DATA with a seeded recipe and write config.json + safetensors.

    The task (its data, loss and metric) is the registry entry's."""
    import torch
    from rich.console import Console

    from disco_zoo.commands.common import folder_tag, model_metadata, parse_model_args, split_metrics, storage_decision
    from disco_zoo.commands.options import check_not_published
    from disco_zoo.hub import HF_ORG, default_store
    from disco_zoo.registry import build_model, get_entry
    from disco_zoo.tasks import task_of
    from disco_zoo.train import TrainConfig, fit
    from disco_zoo.weights import save_dense

    torch.set_num_threads(threads)
    entry = get_entry(model)
    task = task_of(entry)
    train_data = task.train_data(data, input_size, batch_size, seed)
    loaders, info = train_data.loaders, train_data.info
    folder = check_not_published(out or default_store() / f"{entry.arch}.{info.name}", force)  # before training
    args = {**train_data.model_args, **parse_model_args(model_args)}
    torch.manual_seed(seed)
    net = build_model(entry.arch, **args)
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    fit(net, loaders["train"], config, description=f"train {entry.arch}", loss=task.training_loss)
    metrics = split_metrics(task, net, loaders)
    half = storage_decision(storage, task, net, loaders["test"], metrics)
    save_dense(
        net,
        folder,
        {
            "arch": entry.arch,
            "args": args,
            **model_metadata(task, info, net, input_size, folder_tag(folder, info)),
            "hf_hub_id": f"{HF_ORG}/{entry.arch}.{folder_tag(folder, info)}",
            "metrics": metrics,
            "recipe": "disco-zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
        half=half,
    )
    shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
    Console().print(f"{entry.arch}: {shown} -> {folder}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
