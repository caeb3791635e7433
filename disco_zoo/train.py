"""One plain, seeded training loop shared by dense training and DISCO sparsification.

Sparsification needs two hooks on an ordinary loop: an extra loss term (the group
penalty) and a step hook (re-applying frozen masks). Everything else (AdamW, cosine
schedule, progress bar) is the same, so it lives here once. What a step minimises is
the task's (:meth:`disco_zoo.tasks.Task.training_loss`), and so is every metric
(:meth:`disco_zoo.tasks.Task.evaluate`): this loop knows no task kind.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from disco_zoo.progress import interactive, log_line
from disco_zoo.tasks import DEFAULT_TASK, TrainingLoss, get_task

__all__ = ["TrainConfig", "seed_everything", "fit", "recalibrate_batchnorm"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0


def seed_everything(seed: int) -> None:
    """Make a run repeatable: Python, NumPy and torch generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _progress(description: str, total: int, enabled: bool):
    """A bar on a terminal; elsewhere :func:`fit` logs a plain line per epoch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}"))
    progress = Progress(*columns, disable=not (enabled and interactive()), transient=False)
    return progress, progress.add_task(description, total=total, status="")


def fit(
    model: nn.Module,
    train_loader: Iterable[tuple[Any, Any]],
    config: TrainConfig,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    description: str = "train",
    show_progress: bool = True,
    loss: TrainingLoss | None = None,
) -> list[float]:
    """Train with AdamW + cosine decay; returns the mean loss of each epoch.

    ``loss(model, inputs, targets)`` is the task's training loss (by default that of
    the default task kind, :data:`disco_zoo.tasks.DEFAULT_TASK`).
    """
    seed_everything(config.seed)
    task_loss = loss if loss is not None else get_task(DEFAULT_TASK).training_loss
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    losses: list[float] = []
    progress, bar = _progress(description, config.epochs * steps_per_epoch, show_progress)
    log_epochs, started = show_progress and progress.disable, time.monotonic()
    with progress:
        for epoch in range(config.epochs):
            model.train()
            total, count = 0.0, 0
            for inputs, targets in train_loader:
                step_loss = task_loss(model, inputs, targets)
                if extra_loss is not None:
                    step_loss = step_loss + extra_loss(model)
                optimizer.zero_grad(set_to_none=True)
                step_loss.backward()
                optimizer.step()
                schedule.step()
                if after_step is not None:
                    after_step(model)
                total += step_loss.item() * len(inputs)
                count += len(inputs)
                progress.update(bar, advance=1, status=f"epoch {epoch + 1} loss {total / count:.3f}")
            losses.append(total / max(count, 1))
            if log_epochs:
                log_line(f"{description}: epoch {epoch + 1}/{config.epochs} loss {losses[-1]:.3f}", started)
    return losses


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable[tuple[Any, Any]]) -> bool:
    """Re-estimate BatchNorm running statistics as exact averages over ``loader``.

    After pruning and a short fine-tune the exponential running averages lag the weights
    they describe (seen here: a 4-node ResNet-18 at 22% top-1 in eval mode, 99% with batch
    statistics, 100% after this). Returns whether the model had any BatchNorm.
    A model with stages (:mod:`disco_zoo.graph.stages`) runs its pre-processing and core.
    """
    from disco_zoo.graph.stages import before_core, core_of

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return False
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    core = core_of(model)  # a model with stages (a detector) has its BatchNorms in its core:
    for inputs, _ in loader:  # no targets needed, no losses or box decoding run
        core(before_core(model, inputs)[0])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return True
