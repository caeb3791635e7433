"""Helpers shared by the commands that write model folders (train, sparsify): argument
parsing, the weights to start from, the task's metrics, the storage decision and the
metadata config.json gets."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks import DatasetInfo, Task
from disco_zoo.weight_storage import check_storage_dtype

if TYPE_CHECKING:
    from disco_zoo.weights import Checkpoint

__all__ = ["parse_model_args", "read_init", "split_metrics", "storage_decision", "folder_tag", "model_metadata"]


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """``["img_size=32", "patch_size=4", "reduced_tail=false"]`` -> ``{"img_size": 32,
    "patch_size": 4, "reduced_tail": False}``: ints, floats, ``true``/``false``, else text."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise DiscoZooError(f"--arg expects KEY=VALUE, got {pair!r}")
        value: Any = {"true": True, "false": False}.get(raw.lower(), raw)
        for cast in (int, float) if isinstance(value, str) else ():
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        parsed[key] = value
    return parsed


def read_init(text: str, option: str = "--init") -> "Checkpoint":
    """The weights ``--init`` names: a safetensors file, a timm/HF folder, or a dense
    disco-zoo folder given by its path or its published name."""
    from disco_zoo.hub import resolve_path_or_name
    from disco_zoo.weights import read_checkpoint

    return read_checkpoint(resolve_path_or_name(text), option)


def split_metrics(task: Task, model: Any, loaders: dict[str, Any], splits: tuple[str, ...] = ("val", "test")) -> dict[str, float]:
    """Every metric of the task on each split, keyed ``<split>_<metric>`` (``test_top1``)."""
    return {f"{split}_{name}": value for split in splits for name, value in task.evaluate(model, loaders[split]).items()}


def _storage_rounded(task: Task, model: Any, loader: Any, storage: str) -> dict[str, float]:
    """The task's metrics of ``model`` with its weights rounded as ``storage`` rounds them
    (computed in fp32): a DISCO model's as its shards hold them, a dense model's whole."""
    from disco_zoo.disco.adapters import find_partition
    from disco_zoo.disco.shards import shard_rounded_state
    from disco_zoo.weight_storage import storage_rounded

    rounded = copy.deepcopy(model)
    if find_partition(rounded) is not None:
        state = shard_rounded_state(rounded, storage)
    else:
        state = {name: storage_rounded(tensor, storage) if tensor.is_floating_point() else tensor
                 for name, tensor in rounded.state_dict().items()}
    rounded.load_state_dict(state)
    return task.evaluate(rounded, loader)


def storage_decision(storage: str, task: Task, model: Any, loader: Any, metrics: dict[str, float]) -> str:
    """The storage dtype to write (:mod:`disco_zoo.weight_storage`). 'auto' is fp16 only
    when fp16 keeps the task's headline test metric unchanged: within the metric's
    ``tolerance`` (exact for top-1, 0.01 dB for PSNR) or as the tables show it
    (:meth:`Metric.format`: mIoU moves in its last float bits under any rounding, which
    no table shows), else fp32. fp16 and int8 are taken as asked.

    When the weights are rounded, ``metrics`` gets the rounded model's test metrics (what
    users load) and keeps the fp32 figures as ``test_<metric>_fp32``.
    """
    if storage != "auto":
        check_storage_dtype(storage, "--storage (or auto)")
    if storage == "fp32":
        return "fp32"
    chosen = "fp16" if storage == "auto" else storage
    rounded = _storage_rounded(task, model, loader, chosen)
    headline = task.primary_metric
    before, after = metrics[f"test_{headline.name}"], rounded[headline.name]
    unchanged = abs(after - before) <= headline.tolerance or headline.format(after) == headline.format(before)
    if storage == "auto" and not unchanged:
        return "fp32"
    for name, value in rounded.items():
        metrics[f"test_{name}_fp32"] = metrics[f"test_{name}"]
        metrics[f"test_{name}"] = value
    return chosen


def folder_tag(folder: Path, info: DatasetInfo) -> str:
    """The tag of a folder named ``arch.tag``, else the data set's name."""
    return folder.name.partition(".")[2] or info.name


def model_metadata(task: Task, info: DatasetInfo, model: Any, input_size: int, tag: str) -> dict[str, Any]:
    """What config.json says about a model written here: its task, tag, data and
    preprocessing, input size, and whether that size is fixed (from the built model's
    own ``pretrained_cfg``, as timm records it)."""
    built_cfg = getattr(model, "pretrained_cfg", None)
    fixed = bool(built_cfg.get("fixed_input_size", False)) if isinstance(built_cfg, dict) else False
    return {
        "task": task.name,
        "tag": tag,
        **info.config_fields(),
        "input_size": [len(info.mean), input_size, input_size],
        "fixed_input_size": fixed,
    }
