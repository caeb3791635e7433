"""The traffic frontier: accuracy against traffic budget for one DISCO architecture.

Why a module: the frontier table (``eval/frontier/<arch>.json``, plotted and quoted in the
notes) must hold measured numbers only. Each point is its folder loaded (every file
verified), scored on the task's test split as stored, and accounted by
:func:`disco_zoo.disco.accounting.disco_accounting`; the budget is the one the folder was
sparsified to (its config's ``sparsify.traffic``). The dense model is scored the same way
on the same split, so the deltas compare like with like.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from disco_zoo.errors import DiscoZooError

__all__ = ["FrontierPoint", "frontier_point", "frontier_table", "HEADLINE"]

HEADLINE = "top1"  # the metric the table records (the classification task's headline)


@dataclass(frozen=True)
class FrontierPoint:
    budget: float  # --traffic the folder was sparsified to
    traffic_ratio: float  # DISCO bytes / dense within-layer-parallel bytes (accounting)
    top1: float  # on the test split, the weights as stored
    flops_ratio: float  # total FLOPs / dense FLOPs
    max_node_params_ratio: float  # largest node's parameters / dense parameters
    folder: str


def _score(model: Any, split: Any) -> float:
    """The headline metric of ``model`` on ``split``."""
    from disco_zoo.tasks import get_task

    config = model.pretrained_cfg
    task = get_task(config.task)
    scores = task.score_split(model, split)
    if HEADLINE not in scores:
        raise DiscoZooError(f"{config.name}: its task reports {sorted(scores)}, the frontier table needs {HEADLINE!r}")
    return float(scores[HEADLINE])


def _split_of(model: Any) -> Any:
    from disco_zoo.tasks import get_task

    config = model.pretrained_cfg
    return get_task(config.task).eval_split(config.dataset, config)


def _shown(folder: Path) -> str:
    """The folder as the table names it: relative to the working directory when inside it."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def frontier_point(folder: Path | str, split: Any = None) -> FrontierPoint:
    """One sparsified folder's point; ``split`` defaults to its task's test split."""
    return _measure(folder, split)[1]


def _measure(folder: Path | str, split: Any) -> tuple[Any, FrontierPoint]:
    """(the folder's config, its point)."""
    from disco_zoo.disco.accounting import disco_accounting
    from disco_zoo.hub import load_folder

    folder = Path(folder)
    model = load_folder(folder)
    config = model.pretrained_cfg
    if config.kind != "disco":
        raise DiscoZooError(f"{folder} holds a {config.kind} model; a frontier point is a DISCO folder")
    budget = (config.raw.get("sparsify") or {}).get("traffic")
    if not isinstance(budget, (int, float)) or isinstance(budget, bool):
        raise DiscoZooError(f"{folder / 'config.json'} has no sparsify.traffic; it was not written by `disco-zoo sparsify`")
    acc = disco_accounting(model, (1, *config.input_size))
    return config, FrontierPoint(
        budget=float(budget),
        traffic_ratio=float(acc.traffic_ratio),
        top1=_score(model, split if split is not None else _split_of(model)),
        flops_ratio=acc.flops_total / acc.flops_dense,
        max_node_params_ratio=max(acc.params_per_node) / acc.params_dense,
        folder=_shown(folder),
    )


def frontier_table(dense: Path | str, folders: Sequence[Path | str]) -> dict[str, Any]:
    """The table of ``folders`` (one architecture, one dense counterpart, distinct budgets)
    against the dense folder ``dense``, points in decreasing budget."""
    from disco_zoo.hub import load_folder

    if not folders:
        raise DiscoZooError("no sparsified folders given; pass at least one DISCO folder")
    dense_model = load_folder(Path(dense))
    dense_config = dense_model.pretrained_cfg
    split = _split_of(dense_model)
    points = []
    for folder in folders:
        config, point = _measure(folder, split)
        if config.dense != dense_config.name:
            raise DiscoZooError(f"{folder} was sparsified from {config.dense!r}, not {dense_config.name!r}; "
                                "pass the folders of one dense model")
        if (config.dataset, config.input_size) != (dense_config.dataset, dense_config.input_size):
            raise DiscoZooError(f"{folder} is for {config.dataset} at {list(config.input_size)}, the dense model for "
                                f"{dense_config.dataset} at {list(dense_config.input_size)}; they share no test split")
        points.append((config.arch, point))
    arches = sorted({arch for arch, _ in points})
    if len(arches) != 1:
        raise DiscoZooError(f"the folders hold architectures {arches}; a frontier table is one architecture's")
    budgets = [p.budget for _, p in points]
    if len(set(budgets)) != len(budgets):
        raise DiscoZooError(f"two folders share a budget ({sorted(budgets)}); pass one folder per budget")
    return {
        "arch": arches[0],
        "dense_model": dense_config.name,
        "dense_top1": _score(dense_model, split),
        "n_test": len(split),
        "points": [asdict(p) for p in sorted((p for _, p in points), key=lambda p: -p.budget)],
    }

