"""Accuracy: the eval split through real N-process distributed inference, the dense
model and the single-process DISCO model, each scored by the task's own metric.

The distributed run is the runtime's DISCO executor (each rank reading only its own
shard); the root rank's outputs go through the task's post-processing like the other
two runs' outputs, so the three figures are comparable by construction.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from disco_zoo.harness.options import EvalOptions
from disco_zoo.harness.report import AccuracyResult
from disco_zoo.harness.runs import run_inference
from disco_zoo.runtime.lifetime import temporary_directory
from disco_zoo.tasks import EvalSplit, Task

__all__ = ["measure_accuracy"]


def measure_accuracy(task: Task, split: EvalSplit, folder: Path, nodes: int, disco: nn.Module, dense: nn.Module,
                     opts: EvalOptions) -> AccuracyResult:
    """The task's metrics of DISCO on ``nodes`` processes, of ``dense`` and of ``disco`` in
    this process; one distributed run per batch of equal-sized inputs."""
    predictions, targets = [], []
    with temporary_directory(prefix="disco-zoo-eval-") as tmp:
        for index, (inputs, batch_targets) in enumerate(split.batches()):
            batch_path = Path(tmp) / f"batch{index}.npy"
            np.save(batch_path, inputs.numpy())
            run = run_inference(folder, nodes, list(inputs.shape), opts, input_path=str(batch_path))
            predictions.append(task.predictions(run.output))
            targets.append(batch_targets)
    return AccuracyResult(
        disco=task.score(task.concat(predictions), task.concat(targets)),
        dense=task.score_split(dense, split),
        disco_single_process=task.score_split(disco, split),
        images=len(split),
        floor=task.floor_scores(split) or {},
    )
