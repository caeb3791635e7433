"""Training DISCO connectivity: group lasso, prune to a traffic budget, fine-tune.

1. Fine-tune the (masks-open) model with a group-lasso penalty: one group per
   (layer, receiving node k, input channel c of another node), the weights
   W[O_k, c] (the whole kernel). Each group's norm is weighted by the bytes it
   would move per inference (relative to the mean), so expensive channels shrink first;
   with ``lasso_flops`` by the mean of that and its FLOPs (relative to the mean), for a
   compute budget that will close cross-node channels (``compute_groups="all"``).
2. Prune: keep groups globally by norm per byte, greedily, while the DISCO traffic
   stays within ``traffic * dense_tp_bytes`` (fixed costs such as the head's partial
   logits and LayerNorm statistics are charged first). The budget is met exactly or
   just under.
3. Optionally (``params``) close more off-diagonal groups, lowest norm per stored
   parameter first, until every node's shard holds at most ``params`` x the dense
   model's parameters. A byte budget alone keeps late layers (1x1 or 2x2 maps at small
   inputs, so nearly free on the wire) fully connected, and their off-diagonal blocks
   then fill every node's shard with almost the dense weights.
4. Optionally (``compute``) prune within the diagonal blocks: drop (layer, node k, own
   input channel) groups, lowest norm per FLOP first, until the total FLOPs are at most
   ``compute`` x the dense model's, and never more than ``max_dropped`` (default
   ``MAX_DROPPED_FRACTION``) of a node's own inputs to one layer: norm per FLOP alone
   favours the big early maps, and without the cap it emptied whole layers (the stem's colour channels, every 3x3 conv
   of a ResNet-50's first stages), which no fine-tuning brings back (top-1 at chance).
   With ``compute_groups="all"`` the open cross-node groups compete in the same ranking
   (closing one saves its FLOPs and its bytes). A byte budget leaves the wide late
   layers of a MobileNet (small maps, so cheap on the wire, but 960 outputs per
   channel) almost fully connected: there the cross blocks, not the diagonal ones,
   hold the FLOPs above the budget, and the group lasso has already shrunk them.
   ``max_dropped=0`` keeps every own channel: only cross-node channels close.
5. Fine-tune with the masks frozen (closed weights get zero gradient).

With ``prune_steps`` S > 1, steps 2-4 are taken gradually (Zhu & Gupta 2017): every
budget moves from where the model stands after the group lasso to its target on a
cubic schedule over S pruning steps, each but the last followed by
``prune_step_epochs`` of masks-frozen training, so the network adapts to a few closed
channels at a time instead of losing them all at once.

Training is :func:`disco_zoo.train.fit` (the project's one loop) with the penalty as
its extra loss. Everything is deterministic under ``seed`` (fit seeds every generator;
the loaders shuffle with their own seeded generator).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from disco_zoo.disco.accounting import disco_accounting, disco_traffic, layer_channel_bytes, layer_shapes
from disco_zoo.disco.adapters import apply_partition, get_partition
from disco_zoo.disco.partition import LayerSplit, Partition
from disco_zoo.errors import DiscoZooError

__all__ = ["SparsifyConfig", "GroupLasso", "prune_to_budget", "prune_params", "prune_compute", "sparsify",
           "pruning_schedule", "COMPUTE_GROUPS"]

MAX_DROPPED_FRACTION = 0.5  # compute pruning: at most this share of a node's own inputs per layer


@dataclass
class SparsifyConfig:
    traffic: float = 0.2  # DISCO bytes / dense within-layer-parallel bytes
    penalty: float = 1e-3  # group-lasso strength
    epochs: int = 2  # training with the penalty
    finetune_epochs: int = 1  # training with masks frozen
    lr: float = 1e-3  # AdamW, as disco_zoo.train.fit
    weight_decay: float = 0.05
    compute: float | None = None  # optional FLOPs budget: total / dense FLOPs
    params: float | None = None  # optional storage budget: max over nodes of node params / dense params
    compute_groups: str = "own"  # what compute pruning may close: "own" (diagonal blocks) or "all" (cross too)
    max_dropped: float = MAX_DROPPED_FRACTION  # compute pruning: most of a node's own inputs one layer may lose
    lasso_flops: bool = False  # group lasso weighs each group's FLOPs next to its bytes (see GroupLasso)
    distill: float = 0.0  # weight of the dense teacher's distillation loss (disco_zoo.distill); 0: labels only
    prune_steps: int = 1  # budgets reached in this many pruning steps (cubic schedule); 1: all at once
    prune_step_epochs: int = 1  # masks-frozen epochs after each pruning step but the last
    seed: int = 0
    dtype_bytes: int = 4  # activation bytes on the wire, for the budget


def _squared_group_sums(module: nn.Module, rows_onehot: torch.Tensor) -> torch.Tensor:
    """(nodes, in) sums of squared weights of W[O_k, c] over rows and kernel."""
    w = module.weight
    sq = w.pow(2).flatten(2).sum(2) if w.dim() > 2 else w.pow(2)
    return rows_onehot @ sq


def _rows_onehot(layer: LayerSplit) -> torch.Tensor:
    onehot = torch.zeros(layer.nodes, layer.out_channels)
    for k, rows in enumerate(layer.out_groups):
        onehot[k, rows] = 1.0
    return onehot


def _relative(costs: dict[str, float]) -> dict[str, float]:
    """Each layer's cost over the mean layer's, so penalties of different units add up."""
    mean = sum(costs.values()) / max(len(costs), 1)
    return {name: cost / mean if mean else 0.0 for name, cost in costs.items()}


def _offdiag_open(layer: LayerSplit) -> torch.Tensor:
    """(nodes, in) 1 where (k, c) is an open off-diagonal group."""
    open_ = torch.zeros(layer.nodes, layer.in_channels)
    for k in range(layer.nodes):
        for j in range(layer.nodes):
            if j != k:
                open_[k, layer.selected[k][j]] = 1.0
    return open_


class GroupLasso:
    """sum over open off-diagonal groups of cost_g * ||W_g||_2.

    cost: the group's bytes per inference relative to the mean layer's; with ``flops``
    (a compute budget is coming), the mean of that and its FLOPs relative to the mean
    layer's. Bytes alone leave the late layers of a MobileNet (small maps, so nearly
    free on the wire, but hundreds of outputs per channel) unshrunk, and compute pruning
    then has to close their large weights, or drop own channels, all at once.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], flops: bool = False) -> None:
        part = get_partition(model)
        shapes = layer_shapes(model, input_shape)
        modules = dict(model.named_modules())
        self.terms: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
        splits = {name: layer for name, layer in part.layers.items() if layer.mode == "split"}
        costs = _relative({name: layer_channel_bytes(layer, shapes, 1) for name, layer in splits.items()})
        if flops:
            per_entry = disco_accounting(model, input_shape).flops_per_entry
            group_flops = _relative({name: per_entry[name] * layer.out_channels / layer.nodes
                                     for name, layer in splits.items()})
            costs = {name: (costs[name] + group_flops[name]) / 2 for name in costs}
        for name, cost in costs.items():
            layer = part.layers[name]
            weight = _offdiag_open(layer) * cost
            self.terms.append((modules[name], _rows_onehot(layer), weight))

    def __call__(self) -> torch.Tensor:
        total = torch.zeros(())
        for module, onehot, weight in self.terms:
            norms = (_squared_group_sums(module, onehot.to(module.weight)) + 1e-12).sqrt()
            total = total + (norms * weight.to(norms)).sum()
        return total


def prune_to_budget(
    model: nn.Module, traffic: float, input_shape: tuple[int, ...], dtype_bytes: int = 4
) -> dict[str, Any]:
    """Close off-diagonal groups so DISCO traffic <= traffic * dense traffic; returns the numbers."""
    from disco_zoo.graph import trace_model
    from disco_zoo.graph.accounting import dense_tp_traffic

    part = get_partition(model)
    was_training = model.training
    dense = dense_tp_traffic(trace_model(model, input_shape, dtype_bytes), part.nodes, dtype_bytes, part.ratios).total
    model.train(was_training)
    shapes = layer_shapes(model, input_shape)
    closed = part.copy()  # every S_kj empty; compute pruning (dropped) kept
    for layer in closed.layers.values():
        layer.selected = [[[] for _ in row] for row in layer.selected]
    fixed = sum(disco_traffic(closed, shapes, dtype_bytes)[1].values())
    budget = int(traffic * dense)
    if budget < fixed:
        raise DiscoZooError(
            f"traffic {traffic} allows {budget} bytes but the head and norms alone need {fixed}; raise --traffic"
        )
    modules = dict(model.named_modules())
    candidates = []  # (score, order, name, k, c, bytes)
    with torch.no_grad():
        for name, layer in part.layers.items():
            if layer.mode != "split":
                continue
            cost = layer_channel_bytes(layer, shapes, dtype_bytes)  # a head shared across levels: every call's bytes
            norms = _squared_group_sums(modules[name], _rows_onehot(layer).to(modules[name].weight)).sqrt()
            for k in range(layer.nodes):
                for j in range(layer.nodes):
                    for c in layer.selected[k][j] if j != k else []:
                        candidates.append((norms[k, c].item() / cost, len(candidates), name, k, j, c, cost))
    candidates.sort(key=lambda g: (-g[0], g[1]))
    spent = fixed
    for _, _, name, k, j, c, cost in candidates:
        if spent + cost <= budget:
            closed.layers[name].selected[k][j].append(c)
            spent += cost
    for layer in closed.layers.values():
        layer.selected = [[sorted(s) for s in row] for row in layer.selected]
    apply_partition(model, closed)
    kept = sum(len(s) for layer in closed.layers.values() for row in layer.selected for s in row)
    return {
        "dense_tp_bytes": dense,
        "budget_bytes": budget,
        "disco_bytes": spent,
        "fixed_bytes": fixed,
        "groups_total": len(candidates),
        "groups_kept": kept,
    }


def _params_candidates(model: nn.Module, part: Partition, k: int) -> list[tuple[float, int, str, int, int, int]]:
    """Node k's open off-diagonal groups: (norm per parameter saved, order, name, j, c, saved).

    Closing c in S_kj removes one column of node k's slice, i.e. len(O_k) x kernel numbers.
    """
    modules = dict(model.named_modules())
    candidates = []
    with torch.no_grad():
        for name, layer in part.layers.items():
            if layer.mode != "split":
                continue
            weight = modules[name].weight
            saved = len(layer.out_groups[k]) * weight[0, 0].numel()
            if not saved:
                continue
            norms = _squared_group_sums(modules[name], _rows_onehot(layer).to(weight)).sqrt()
            for j in range(layer.nodes):
                for c in layer.selected[k][j] if j != k else []:
                    candidates.append((norms[k, c].item() / saved, len(candidates), name, j, c, saved))
    return candidates


def prune_params(
    model: nn.Module, params: float, input_shape: tuple[int, ...], dtype_bytes: int = 4
) -> dict[str, Any]:
    """Close off-diagonal groups until every node stores <= params x the dense parameters.

    Only closes channels, so the traffic can only fall; the model changes only on success.
    """
    part = get_partition(model).copy()
    stored = disco_accounting(model, input_shape, dtype_bytes).params_per_node
    budget = int(params * sum(p.numel() for p in model.parameters()))
    per_node = []
    for k, have in enumerate(stored):
        candidates = sorted(_params_candidates(model, part, k), key=lambda g: (g[0], g[1]))
        floor = have - sum(g[-1] for g in candidates)
        if floor > budget:
            raise DiscoZooError(
                f"params {params} allows {budget:,} parameters per node but node {k} stores {floor:,} "
                "with no cross-node channels at all; raise --params"
            )
        for _, _, name, j, c, saved in candidates:
            if have <= budget:
                break
            part.layers[name].selected[k][j].remove(c)
            have -= saved
        per_node.append(have)
    part.check()
    apply_partition(model, part)
    traffic = disco_traffic(part, layer_shapes(model, input_shape), dtype_bytes)[1]
    kept = sum(len(s) for layer in part.layers.values() for row in layer.selected for s in row)
    return {"params_budget": budget, "params_per_node": per_node, "disco_bytes": sum(traffic.values()),
            "groups_kept": kept}


COMPUTE_GROUPS = ("own", "all")


def prune_compute(
    model: nn.Module, compute: float, input_shape: tuple[int, ...], groups: str = "own",
    max_dropped: float = MAX_DROPPED_FRACTION,
) -> dict[str, Any]:
    """Close groups until FLOPs <= compute x dense FLOPs: node k's own input channels
    (diagonal blocks), and with ``groups="all"`` its open cross-node ones as well."""
    if groups not in COMPUTE_GROUPS:
        raise DiscoZooError(f"compute groups must be one of {', '.join(COMPUTE_GROUPS)}, got {groups!r}")
    if not 0 <= max_dropped <= 1:
        raise DiscoZooError(f"max dropped must be in [0, 1], got {max_dropped}")
    part = get_partition(model).copy()  # a copy: the model changes only on success
    acc = disco_accounting(model, input_shape)
    budget = compute * acc.flops_dense
    excess = acc.flops_total - budget
    per_entry = acc.flops_per_entry  # layer -> FLOPs of one (output, input) weight entry
    modules = dict(model.named_modules())
    candidates = []  # (norm per FLOP, order, name, k, j, c, flops); j == k: an own channel
    with torch.no_grad():
        for name, layer in part.layers.items():
            if layer.mode != "split":
                continue
            norms = _squared_group_sums(modules[name], _rows_onehot(layer).to(modules[name].weight)).sqrt()
            if not layer.dropped:
                layer.dropped = [[] for _ in range(layer.nodes)]
            for k in range(layer.nodes):
                flops = per_entry[name] * len(layer.out_groups[k])
                own = sorted(set(layer.in_groups[k]) - set(layer.dropped[k]))
                cross = [(j, c) for j in range(layer.nodes) if j != k for c in layer.selected[k][j]]
                for j, c in [(k, c) for c in own] + (cross if groups == "all" else []):
                    candidates.append((norms[k, c].item() / max(flops, 1e-9), len(candidates), name, k, j, c, flops))
    candidates.sort(key=lambda g: (g[0], g[1]))
    room = {(name, k): int(max_dropped * len(layer.in_groups[k])) - len(layer.dropped[k])
            for name, layer in part.layers.items() if layer.mode == "split" for k in range(layer.nodes)}
    removed = 0.0
    for _, _, name, k, j, c, flops in candidates:
        if removed >= excess:
            break
        if j != k:
            part.layers[name].selected[k][j].remove(c)
            removed += flops
        elif room[name, k] > 0:
            room[name, k] -= 1
            part.layers[name].dropped[k].append(c)
            removed += flops
    if removed < excess:
        raise DiscoZooError(
            f"compute {compute} is below what dropping at most {max_dropped:g} of each layer's own "
            "inputs on each node allows" + ("" if groups == "all" else " (--compute-groups all may also close "
                                           "cross-node channels)") + "; raise --compute")
    for layer in part.layers.values():
        layer.dropped = [sorted(d) for d in layer.dropped]
    part.check()
    apply_partition(model, part)
    after = disco_accounting(model, input_shape)
    stats = {"flops_budget": int(budget), "flops_total": after.flops_total, "compute_groups": groups}
    if groups == "all":  # closing cross channels also lowered the bytes and the shards
        stats.update(disco_bytes=after.disco_bytes, params_per_node=after.params_per_node)
    return stats


Budgets = tuple[float, "float | None", "float | None"]  # traffic, params, compute


def pruning_schedule(model: nn.Module, cfg: SparsifyConfig, input_shape: tuple[int, ...]) -> list[Budgets]:
    """The (traffic, params, compute) budgets of each pruning step: from the model's own
    ratios now to ``cfg``'s on a cubic curve (most of the way early, while the network
    still has the capacity to adapt; the last steps small). The last step is the target
    exactly; a budget the model already meets is the target at every step."""
    if cfg.prune_steps == 1:
        return [(cfg.traffic, cfg.params, cfg.compute)]
    acc = disco_accounting(model, input_shape, cfg.dtype_bytes)
    now = (acc.traffic_ratio, max(acc.params_per_node) / acc.params_dense, acc.flops_total / acc.flops_dense)
    targets = (cfg.traffic, cfg.params, cfg.compute)

    def at(step: int, start: float, target: "float | None") -> "float | None":
        if target is None or start <= target:
            return target
        return target + (start - target) * (1 - step / cfg.prune_steps) ** 3

    return [tuple(at(step, start, target) for start, target in zip(now, targets))  # type: ignore[misc]
            for step in range(1, cfg.prune_steps + 1)]


def sparsify(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: SparsifyConfig,
    input_shape: tuple[int, ...],
    show_progress: bool = False,
    loss: Any = None,
    divergence: Any = None,
    distill_outputs_of: Any = None,
) -> dict[str, Any]:
    """Group lasso -> prune to ``cfg.traffic`` (then ``cfg.params``, ``cfg.compute``) ->
    fine-tune with masks frozen -> BatchNorm statistics re-estimated (in place).
    ``loss`` is the task's training loss (:meth:`disco_zoo.tasks.Task.training_loss`; fit's default when None).
    With ``cfg.distill > 0`` the model as it arrives (masks open: the dense function) is the
    teacher, and ``divergence`` (:meth:`disco_zoo.tasks.Task.distillation_loss`) of the outputs of
    ``distill_outputs_of(model)`` (:meth:`~disco_zoo.tasks.Task.distillation_outputs`) is weighed in.

    ``model`` must be a DISCO model (see :func:`disco_zoo.disco.adapters.to_disco`);
    ``input_shape`` (1, C, H, W) is the inference size the traffic budget is for.
    """
    if not 0 < cfg.traffic <= 1:
        raise DiscoZooError(f"traffic must be in (0, 1], got {cfg.traffic}")
    if cfg.compute is not None and not 0 < cfg.compute <= 1:
        raise DiscoZooError(f"compute must be in (0, 1], got {cfg.compute}")
    if cfg.compute_groups not in COMPUTE_GROUPS:
        raise DiscoZooError(f"compute groups must be one of {', '.join(COMPUTE_GROUPS)}, got {cfg.compute_groups!r}")
    if not 0 <= cfg.max_dropped <= 1:
        raise DiscoZooError(f"max dropped must be in [0, 1], got {cfg.max_dropped}")
    if cfg.params is not None and not 0 < cfg.params <= 1:
        raise DiscoZooError(f"params must be in (0, 1], got {cfg.params}")
    from disco_zoo.train import TrainConfig, fit, recalibrate_batchnorm

    if cfg.distill < 0:
        raise DiscoZooError(f"distill must be >= 0, got {cfg.distill}")
    if cfg.prune_steps < 1 or cfg.prune_step_epochs < 0:
        raise DiscoZooError(f"prune steps must be >= 1 and epochs per step >= 0, got {cfg.prune_steps} and "
                            f"{cfg.prune_step_epochs}")
    get_partition(model)
    if cfg.distill:
        from disco_zoo.distill import distilled_loss
        from disco_zoo.tasks import get_task, DEFAULT_TASK

        task_loss = loss if loss is not None else get_task(DEFAULT_TASK).training_loss
        divergence = divergence if divergence is not None else get_task(DEFAULT_TASK).distillation_loss
        loss = distilled_loss(task_loss, model, divergence, cfg.distill,
                              distill_outputs_of if distill_outputs_of is not None else (lambda m: m))
    penalty = GroupLasso(model, input_shape, flops=cfg.lasso_flops)
    if cfg.epochs:
        train = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed)
        fit(model, train_loader, train, lambda m: cfg.penalty * penalty(), description="group lasso",
            show_progress=show_progress, loss=loss)
    schedule = pruning_schedule(model, cfg, input_shape)
    for step, (traffic, params, compute) in enumerate(schedule, start=1):
        stats = prune_to_budget(model, traffic, input_shape, cfg.dtype_bytes)
        if params is not None:
            stats.update(prune_params(model, params, input_shape, cfg.dtype_bytes))
        if compute is not None:
            stats.update(prune_compute(model, compute, input_shape, cfg.compute_groups, cfg.max_dropped))
        if step < len(schedule) and cfg.prune_step_epochs:
            train = TrainConfig(epochs=cfg.prune_step_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                seed=cfg.seed + step)
            fit(model, train_loader, train, description=f"pruning step {step}/{len(schedule)} (masks frozen)",
                show_progress=show_progress, loss=loss)
    if cfg.finetune_epochs:  # the masks are frozen: closed weights get no gradient
        train = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed)
        stats["finetune_loss"] = fit(model, train_loader, train, description="fine-tune (masks frozen)",
                                     show_progress=show_progress, loss=loss)[-1]
    trained = bool(cfg.epochs or cfg.finetune_epochs)
    stats["batchnorm_recalibrated"] = trained and recalibrate_batchnorm(model, train_loader)
    return stats
