"""Task kinds, looked up by name: the one table of them.

A pretrained folder's config names its task (``FolderConfig.task``), and so does a
registry entry for an untrained build (``ModelEntry.task``); :func:`task_of` takes
either. A new task kind is a :class:`~disco_zoo.tasks.base.Task` subclass in its own
module here, added to :data:`TASKS`; nothing else in the package changes.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks.base import DatasetInfo, EvalSplit, Metric, Task, TrainData, TrainingLoss
from disco_zoo.tasks.classification import ClassificationTask
from disco_zoo.tasks.detection import DetectionTask
from disco_zoo.tasks.segmentation import SegmentationTask
from disco_zoo.tasks.super_resolution import SuperResolutionTask

__all__ = ["TASKS", "DEFAULT_TASK", "get_task", "task_of", "find_metric", "Task", "Metric", "DatasetInfo",
           "TrainData", "EvalSplit", "TrainingLoss"]

TASKS: dict[str, Task] = {task.name: task for task in (ClassificationTask(), SegmentationTask(), SuperResolutionTask(),
                                                       DetectionTask())}
DEFAULT_TASK = "classification"  # the kind a config or entry has when it names none (store, registry)


def get_task(kind: str) -> Task:
    """The task object of a kind; an unknown kind names the known ones."""
    try:
        return TASKS[kind]
    except KeyError:
        raise DiscoZooError(f"unknown task kind {kind!r}; known: {', '.join(sorted(TASKS))}") from None


def task_of(described: Any) -> Task:
    """The task of anything that names one: a folder config, a registry entry, or a
    loaded model carrying its ``pretrained_cfg``."""
    kind = getattr(described, "task", None)
    if kind is None:
        kind = getattr(getattr(described, "pretrained_cfg", None), "task", None)
    if not isinstance(kind, str):
        raise DiscoZooError(f"{type(described).__name__} names no task kind (expected a folder config, a registry "
                            "entry or a model loaded with pretrained weights)")
    return get_task(kind)


def find_metric(name: str) -> Metric:
    """A metric by its name, across every task kind (how a result key is shown)."""
    for task in TASKS.values():
        for metric in task.metrics:
            if metric.name == name:
                return metric
    raise DiscoZooError(f"unknown metric {name!r}; known: {', '.join(m.name for t in TASKS.values() for m in t.metrics)}")
