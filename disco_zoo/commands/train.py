"""``disco-zoo train``: train a dense model on the embedded digits and publish it to a hub folder."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer


def train_command(
    model: str = typer.Argument(..., help="Dense architecture, e.g. resnet50."),
    data: str = typer.Option("digits", "--data", help="Only the embedded 'digits' set is trainable here."),
    epochs: int = typer.Option(15, "--epochs", min=1),
    lr: float = typer.Option(2e-3, "--lr"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    input_size: int = typer.Option(32, "--input-size", min=8),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", min=1, help="torch intra-op threads."),
    storage: str = typer.Option("auto", "--storage", help="auto (fp16 when test top-1 is unchanged, else fp32) | fp16 | fp32."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default hub/<arch>.<data>)."),
    model_args: list[str] = typer.Option([], "--arg", help="Builder argument KEY=VALUE (int/float/str), repeatable."),
) -> None:
    """Train MODEL from scratch on DATA with a seeded recipe and write config.json + safetensors."""
    import torch
    from rich.console import Console

    from disco_zoo.commands.common import parse_model_args, require_digits, storage_decision
    from disco_zoo.data.digits import DIGITS_MEAN, DIGITS_STD, NUM_CLASSES, digits_loaders
    from disco_zoo.hub import REPO_HUB
    from disco_zoo.registry import create_model, get_entry
    from disco_zoo.train import TrainConfig, accuracy, fit
    from disco_zoo.weights import save_dense

    require_digits(data)
    torch.set_num_threads(threads)
    entry = get_entry(model)
    args = {"num_classes": NUM_CLASSES, **parse_model_args(model_args)}
    torch.manual_seed(seed)
    net = create_model(entry.arch, **args)
    loaders = digits_loaders(size=input_size, batch_size=batch_size, seed=seed)
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    fit(net, loaders["train"], config, description=f"train {entry.arch}")
    metrics = {"val_top1": accuracy(net, loaders["val"]), "test_top1": accuracy(net, loaders["test"])}
    half = storage_decision(storage, net, loaders["test"], metrics)
    folder = out or REPO_HUB / f"{entry.arch}.{data}"
    save_dense(
        net,
        folder,
        {
            "arch": entry.arch,
            "args": args,
            "dataset": data,
            "input_size": [3, input_size, input_size],
            "mean": [DIGITS_MEAN] * 3,
            "std": [DIGITS_STD] * 3,
            "metrics": metrics,
            "recipe": "disco-zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
        half=half,
    )
    Console().print(f"{entry.arch}: val top-1 {metrics['val_top1']:.4f}, test top-1 {metrics['test_top1']:.4f} -> {folder}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
