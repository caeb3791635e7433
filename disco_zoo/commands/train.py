"""``disco-zoo train``: train a dense model on its task's data and publish it to a hub folder.

Bring your own data and weights: ``--data`` is the embedded set or an ImageFolder root
(``train/`` and ``val/``, one sub-folder per class); the folder's classes set
``num_classes`` and are saved as ``class_names``. ``--init`` starts from a dense
disco-zoo folder (path or name) or a timm checkpoint (:func:`disco_zoo.weights.read_checkpoint`);
a head for another set of classes is re-initialised, as timm does.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from disco_zoo.registry import ModelEntry
    from disco_zoo.weights import Checkpoint


def _check_init_fits(checkpoint: "Checkpoint", entry: "ModelEntry", task_name: str) -> None:
    """Weights made for another architecture or task are refused by name, before training
    (a shape error naming one tensor would say less)."""
    from disco_zoo.errors import DiscoZooError

    where = f"--init {checkpoint.source}"
    config = checkpoint.config
    if config is not None and config.arch != entry.arch:
        raise DiscoZooError(f"{where} holds a {config.arch} model, not {entry.arch}; train {config.arch} or pick "
                            f"{entry.arch} weights.")
    if config is not None and config.task != task_name:
        raise DiscoZooError(f"{where} is a {config.task} model; {entry.arch} trains for {task_name}.")
    timm_name = entry.kwargs.get("timm_name")
    if checkpoint.timm_architecture and timm_name and checkpoint.timm_architecture != timm_name:
        raise DiscoZooError(f"{where} is a timm {checkpoint.timm_architecture} checkpoint; {entry.arch} is timm "
                            f"{timm_name}.")


def train_command(
    model: str = typer.Argument(..., help="Dense architecture, e.g. resnet50."),
    data: Optional[str] = typer.Option(
        None, "--data", help="The task's embedded set (default: 'digits' for classification, 'digit_canvas' for "
                             "segmentation, 'digit_boxes' for detection) or a folder root with train/ and val/ "
                             "(ImageFolder; mask folder; COCO with annotations/instances_{train,val}.json)."),
    init: Optional[str] = typer.Option(
        None, "--init", help="Weights to start from: a dense model folder or name, a .safetensors state dict, or a "
                             "timm/Hugging Face folder with model.safetensors (a head for other classes is re-initialised)."),
    init_backbone: Optional[str] = typer.Option(
        None, "--init-backbone", help="Classifier weights to start the model's backbone from (a dense folder or name, "
                                      "or a .safetensors state dict), as torchvision's weights_backbone; e.g. a "
                                      "detector's ResNet-18 from resnet18.digits."),
    epochs: int = typer.Option(15, "--epochs", min=1),
    lr: float = typer.Option(2e-3, "--lr"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    input_size: int = typer.Option(32, "--input-size", min=8),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N images per split (quick runs)."),
    augment: bool = typer.Option(False, "--augment", help="Augment the training samples as the task offers "
                                                          "(detection: SSD's photometric, zoom-out and IoU crop)."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", min=1, help="torch intra-op threads."),
    storage: str = typer.Option("auto", "--storage", help="auto (fp16 when the task's headline test metric is unchanged, else fp32) | fp16 | int8 | fp32."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: $DISCO_ZOO_HUB or hub/, <arch>.<data>)."),
    force: bool = typer.Option(False, "--force", help="Replace a published folder (in hub/ or $DISCO_ZOO_HUB) and its card."),
    model_args: list[str] = typer.Option([], "--arg",
                                         help="Builder argument KEY=VALUE (int/float/true/false/str), repeatable."),
) -> None:
    """Train MODEL on DATA (from scratch, or from --init weights) with a seeded recipe and
    write config.json + safetensors.

    The task (its data, loss and metric) is the registry entry's."""
    import torch
    from rich.console import Console

    from disco_zoo.commands.common import (folder_tag, model_metadata, parse_model_args, read_init, split_metrics,
                                           storage_decision)
    from disco_zoo.commands.options import check_not_published
    from disco_zoo.hub import HF_ORG, default_store
    from disco_zoo.progress import log_line
    from disco_zoo.registry import build_model, get_entry
    from disco_zoo.tasks import task_of
    from disco_zoo.train import TrainConfig, fit
    from disco_zoo.weights import load_backbone_state, load_pretrained_state, save_dense

    torch.set_num_threads(threads)
    entry = get_entry(model)
    task = task_of(entry)
    checkpoint = read_init(init) if init is not None else None  # a bad --init fails before the data is read
    if checkpoint is not None:
        _check_init_fits(checkpoint, entry, task.name)
    backbone_checkpoint = read_init(init_backbone, "--init-backbone") if init_backbone is not None else None
    train_data = task.train_data(data or task.embedded_dataset, input_size, batch_size, seed, limit, augment)
    loaders, info = train_data.loaders, train_data.info
    folder = check_not_published(out or default_store() / f"{entry.arch}.{info.name}", force)  # before training
    args = {**(checkpoint.args if checkpoint else {}), **train_data.model_args, **parse_model_args(model_args)}
    torch.manual_seed(seed)
    net = build_model(entry.arch, **args)
    if checkpoint is not None:
        note = load_pretrained_state(net, checkpoint, info.class_names)
        if note:
            log_line(note)
    if backbone_checkpoint is not None:
        log_line(load_backbone_state(net, backbone_checkpoint))
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    fit(net, loaders["train"], config, description=f"train {entry.arch}", loss=task.training_loss)
    metrics = split_metrics(task, net, loaders)
    stored_as = storage_decision(storage, task, net, loaders["test"], metrics)
    save_dense(
        net,
        folder,
        {
            "arch": entry.arch,
            "args": args,
            **model_metadata(task, info, net, input_size, folder_tag(folder, info)),
            "hf_hub_id": f"{HF_ORG}/{entry.arch}.{folder_tag(folder, info)}",
            "metrics": metrics,
            **({"init": checkpoint.provenance()} if checkpoint is not None else {}),
            **({"init_backbone": backbone_checkpoint.provenance()} if backbone_checkpoint is not None else {}),
            "recipe": "disco-zoo " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        },
        storage=stored_as,
    )
    shown = ", ".join(f"{key} {value:.4f}" for key, value in metrics.items())
    Console().print(f"{entry.arch}: {shown} -> {folder}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
