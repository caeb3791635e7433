"""``disco-zoo store``: re-store a model folder's weights at a smaller storage dtype.

Why a command: a folder in git keeps every old blob for ever, and retraining a model
only to write its weights in fewer bytes would cost hours and change the weights. This
rounds the published weights (fp32 -> fp16 or int8, fp16 -> int8), measures the task's
metrics on the test split before and after, and rewrites the folder atomically with the
rounded model's metrics, the earlier dtype's kept beside them (``test_top1_fp16``) and the
step appended to its recipe, so the card shows what users load and how it was made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from disco_zoo.errors import DiscoZooError
from disco_zoo.weight_storage import STORAGE_DTYPES, check_storage_dtype

__all__ = ["store_command", "register", "check_rounds_further"]

_FOLDER_FIELDS = ("files", "kind", "storage_dtype", "nodes", "partition")  # the writers set these again


def check_rounds_further(current: str, wanted: str, folder: Path) -> None:
    """Only a smaller dtype may be asked for: widening cannot bring back what rounding lost."""
    check_storage_dtype(wanted)
    widest_first = list(STORAGE_DTYPES)
    if widest_first.index(wanted) <= widest_first.index(current):
        raise DiscoZooError(f"{folder} is stored as {current}; re-storing as {wanted} would not make it smaller "
                            "(rounding cannot be undone): retrain with its recipe to store it wider.")


def store_command(
    model: str = typer.Argument(..., help="A model folder or published name, e.g. resnet50.digits."),
    storage: str = typer.Option(..., "--storage", help="fp16 | int8 (weight-only, per output channel)."),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluation data (default: the folder's own data set)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: the folder itself)."),
    force: bool = typer.Option(False, "--force", help="Replace a published folder (in hub/ or $DISCO_ZOO_HUB)."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch intra-op threads."),
) -> None:
    """Re-store MODEL's weights as STORAGE, with its test metrics re-measured on the rounded weights."""
    import copy

    import torch
    from rich.console import Console
    from rich.table import Table

    from disco_zoo.commands.options import check_not_published
    from disco_zoo.disco.shards import save_shards
    from disco_zoo.hub import load_folder, resolve_path_or_name
    from disco_zoo.store import load_folder_config
    from disco_zoo.tasks import task_of
    from disco_zoo.weight_storage import storage_rounded
    from disco_zoo.weights import save_dense

    torch.set_num_threads(threads)
    folder = resolve_path_or_name(model)
    config = load_folder_config(folder)
    check_rounds_further(config.storage_dtype, storage, folder)
    target = check_not_published(out or folder, force, "--out" if out else "the folder")
    task = task_of(config)
    net = load_folder(folder)
    split = task.eval_split(data or config.dataset, config)
    before = task.score_split(net, split)
    rounded = copy.deepcopy(net)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(storage_rounded(tensor, storage))
    after = task.score_split(rounded, split)

    metrics: dict[str, Any] = dict(config.metrics)
    for name, value in after.items():  # test_<metric>_<dtype>: the metric with the weights stored as <dtype>
        metrics.setdefault(f"test_{name}_{config.storage_dtype}", before[name])
        metrics[f"test_{name}"] = value
    fields = {key: value for key, value in config.raw.items() if key not in _FOLDER_FIELDS}
    step = f"disco-zoo store {folder.name} --storage {storage}"
    fields.update(metrics=metrics, recipe=f"{config.recipe}; {step}" if config.recipe else step)
    sizes_before = sum(f["size"] for f in config.files)
    if config.kind == "disco":
        save_shards(net, target, extra=fields, storage=storage)
    else:
        save_dense(net, target, fields, storage=storage)
    sizes_after = sum(f["size"] for f in load_folder_config(target).files)

    table = Table(title=f"{folder.name}: {config.storage_dtype} -> {storage}")
    for column in ("test metric", "recorded", f"as stored ({config.storage_dtype})", f"as {storage}"):
        table.add_column(column, justify="right")
    for metric in task.metrics:
        recorded = config.metrics.get(f"test_{metric.name}")
        table.add_row(metric.label, metric.format(recorded) if recorded is not None else "-",
                      metric.format(before[metric.name]), metric.format(after[metric.name]))
    table.add_row("weight bytes", "", f"{sizes_before:,}", f"{sizes_after:,}")
    Console().print(table)
    Console().print(f"wrote {target}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("store")(store_command)
