"""EdgeFlow's whole-model search: greedy sweeps per device subset, baselines as seeds, look-ahead passes.

Why a search around the per-layer optimum: each layer's split is exact for its own finish
(:mod:`disco_zoo.planner.boundary_dp`) but greedy for the model's: a split that ends one
layer sooner can misalign the layers after it and cost traffic later. So the candidates are

1. the greedy sweep (:func:`plan_layers`) over device subsets, largest first; a subset is
   skipped when :func:`compute_bound` (all FLOPs over its summed rates, no traffic) cannot
   beat the best candidate so far, and a sweep under way is given up once
   :func:`disco_zoo.planner.lp.finish_bound` (its devices' free times plus the FLOPs
   still to place) reaches the best;
2. the baselines (:mod:`disco_zoo.planner.baselines`) that fit in memory, scored right after
   the sweep on every device so that the bound bites early;
3. from the best of those, improvement passes: every layer re-solved looking ahead to its
   readers' splits in the previous pass's plan (``plan_layers(ahead=...)``), until a pass
   gains less than ``MIN_GAIN``;
4. if a baseline's plan still stands, a hybrid of layer-wise and row splits from it
   (:func:`_restage`): each stage (layers of one height) split over the k fastest devices,
   each re-split replayed from the stage's first input on (:func:`replay_prefix`).

Every candidate is scored by the model of time's replay (:func:`predicted_latency`), unless
:func:`busy_bound` (its busiest device's compute alone) already rules it out; the lowest
wins, so the plan is never predicted worse than a baseline that fits in memory. Where the
winner is a baseline's plan unchanged, :attr:`PlanStats.is_baseline` and ``origin`` say so.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.baselines import BASELINES
from disco_zoo.planner.lp import (PlanStats, Room, device_subsets, fits_memory, memory_rooms, plan_layers_until,
                                  ranges_from_counts, round_counts)
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.simulate import LayerEvents, Prefix, predicted_latency, replay_prefix
from disco_zoo.planner.units import Placement, extent, splittable

__all__ = ["MIN_GAIN", "MAX_PASSES", "plan_edgeflow", "busy_bound", "compute_bound"]

MIN_GAIN = 1e-3  # an improvement pass that gains less than 0.1% ends the iteration
MAX_PASSES = 8
BOUND_SLACK = 1e-9  # a lower bound must pass the best by this (relative) to rule a plan out: float rounding


@dataclass
class _Candidate:
    placement: Placement
    latency_s: float
    origin: str
    devices: set[int]
    baseline: bool = False  # a baseline's plan, unchanged


def compute_bound(graph: LayerGraph, profile: Profile, devices: set[int]) -> float:
    """A lower bound of any plan's latency on ``devices``: every FLOP at the summed best rates, no traffic."""
    rate = sum(max([d.flops, *d.flops_by_op.values()]) for i, d in enumerate(profile.devices) if i in devices)
    return sum(layer.flops for layer in graph) / rate


Work = list[tuple[str, float, list[float]]]  # (layer, FLOPs per row, each device's rate for it)


def layer_work(graph: LayerGraph, profile: Profile) -> Work:
    """Per layer with FLOPs, what :func:`busy_bound` charges per row: made once per plan."""
    return [(layer.name, layer.flops / extent(layer), [d.rate(layer.op) for d in profile.devices])
            for layer in graph if layer.flops]


def busy_bound(graph: LayerGraph, placement: Placement, profile: Profile, work: Work | None = None) -> float:
    """A lower bound of a placement's replayed latency: its busiest device's compute alone.

    The same sums as :func:`compute_seconds` over every unit; ``work``: :func:`layer_work`.
    """
    work = layer_work(graph, profile) if work is None else work
    busy = [0.0] * len(profile)
    for name, per_row, rates in work:
        for i, (a, b) in enumerate(placement[name]):
            if b > a:
                busy[i] += (b - a) * per_row / rates[i]
    return max(busy)


def _beyond(latency: float) -> float:
    """Where a lower bound rules a plan out against ``latency``: just past it (see BOUND_SLACK)."""
    return latency * (1 + BOUND_SLACK)


def _used(placement: Placement, graph: LayerGraph) -> set[int]:
    return {i for layer in graph if layer.op not in ("input", "output")
            for i, (a, b) in enumerate(placement[layer.name]) if b > a}


def _improve(graph: LayerGraph, profile: Profile, seed: _Candidate, stats: PlanStats,
             events: LayerEvents, rooms: dict[str, Room]) -> _Candidate:
    """Look-ahead passes from ``seed`` until one gains < MIN_GAIN; the best plan seen."""
    best, current = seed, seed.placement
    for _ in range(MAX_PASSES):
        try:
            placement = plan_layers_until(graph, profile, _beyond(best.latency_s), seed.devices, stats, ahead=current,
                                          rooms=rooms)
        except DiscoZooError:
            break
        stats.passes += 1
        if placement is None:  # it cannot beat the best: it would gain nothing
            stats.sweeps_stopped += 1
            break
        latency = predicted_latency(graph, placement, profile, events)
        gain = (best.latency_s - latency) / best.latency_s
        if latency < best.latency_s:
            best = _Candidate(placement, latency, f"{seed.origin}, improved by look-ahead", seed.devices)
        if gain < MIN_GAIN:
            break
        current = placement
    return best


def _restage(graph: LayerGraph, profile: Profile, seed: _Candidate, stats: PlanStats,
             events: LayerEvents, work: Work, rooms: dict[str, Room]) -> _Candidate:
    """Hybrid of layer-wise and row splits: each stage (the layers of one height) in turn
    split in proportion to the rates of the k fastest devices, k = 1..n, or kept; the best
    by the replay is kept before the next stage."""
    by_rate = sorted(range(len(profile)), key=lambda i: -profile.devices[i].rate("conv"))
    best = seed  # fits in memory (a baseline that does, or a re-split checked), so the layers before a stage do
    layers = list(graph)
    for rows in sorted({extent(l) for l in graph if splittable(l) and l.op not in ("input", "output")}, reverse=True):
        stage = [i for i, layer in enumerate(layers)
                 if splittable(layer) and extent(layer) == rows and layer.op not in ("input", "output")]
        prefix: Prefix | None = None  # the replay up to the stage's first input: the same for all its candidates
        for k in range(1, len(profile) + 1):
            weights = [profile.devices[i].rate("conv") if i in by_rate[:k] else 0.0 for i in range(len(profile))]
            split = ranges_from_counts(round_counts(weights, rows))
            placement = dict(best.placement)
            for i in stage:
                placement[layers[i].name] = split
            if placement == best.placement or not fits_memory(graph, placement, profile, rooms, known=stage[0]):
                continue
            stats.restaged += 1
            if busy_bound(graph, placement, profile, work) >= best.latency_s:
                continue
            if prefix is None:
                prefix = replay_prefix(graph, best.placement, profile, events, _first_input(graph, layers, stage))
            latency = predicted_latency(graph, placement, profile, events, prefix)
            if latency < best.latency_s:
                best = _Candidate(placement, latency, f"{seed.origin}, re-split by stage", _used(placement, graph))
    return best


def _first_input(graph: LayerGraph, layers: list[Layer], stage: list[int]) -> int:
    """The first layer (graph order) that is in ``stage`` or sends to it: the layers before it,
    and whom they send to, are the same in every re-split of the stage (:func:`replay_prefix`)."""
    order = {layer.name: i for i, layer in enumerate(layers)}
    return min(min([i, *(order[p] for p in layers[i].predecessors)]) for i in stage)


def plan_edgeflow(graph: LayerGraph, profile: Profile) -> tuple[Placement, PlanStats]:
    """The EdgeFlow plan: the lowest replayed latency over the candidates in the module doc.

    The cyclic garbage collector is paused meanwhile: planning allocates many small
    objects, and a full collection walks every object of the traced torch model (here
    it took 0.2 s, twice the time of a whole plan).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _plan(graph, profile)
    finally:
        if paused:
            gc.enable()


def _plan(graph: LayerGraph, profile: Profile) -> tuple[Placement, PlanStats]:
    stats = PlanStats()
    t0, cpu0 = time.perf_counter(), time.process_time()
    scored: list[_Candidate] = []
    best = math.inf
    events: LayerEvents = {}  # the replays' per-layer events, shared by every candidate
    work, rooms = layer_work(graph, profile), memory_rooms(graph)

    def consider(placement: Placement, origin: str, devices: set[int], baseline: bool = False) -> None:
        nonlocal best
        if busy_bound(graph, placement, profile, work) >= best:
            stats.replays_skipped += 1  # its busiest device alone is no faster than the best so far
            return
        scored.append(_Candidate(placement, predicted_latency(graph, placement, profile, events), origin, devices, baseline))
        best = min(best, scored[-1].latency_s)

    subsets = sorted(device_subsets(profile), key=len, reverse=True)
    full_error: DiscoZooError | None = None
    for step, allowed in enumerate(subsets):
        if step == 1:  # after the sweep on every device: the baselines, to tighten the bound early
            seen: list[Placement] = []
            for name, make in BASELINES.items():
                placement = make(graph, profile)
                if placement not in seen and fits_memory(graph, placement, profile, rooms):
                    consider(placement, f"baseline {name}", _used(placement, graph), baseline=True)
                seen.append(placement)
        if compute_bound(graph, profile, allowed) >= best:
            stats.subsets_pruned += 1
            continue
        try:
            placement = plan_layers_until(graph, profile, _beyond(best), allowed, stats, rooms=rooms)
        except DiscoZooError as err:
            if len(allowed) == len(profile):
                full_error = err  # names every device's room, the clearest message
            continue
        if placement is None:  # its per-layer finishes, a lower bound of its replay, reached the best
            stats.sweeps_stopped += 1
            continue
        consider(placement, "greedy on " + "+".join(profile.devices[i].name for i in sorted(allowed)), allowed)
    if not scored:
        raise full_error or DiscoZooError("no device subset can hold the model; give devices more memory_bytes")
    seed = min(scored, key=lambda c: c.latency_s)
    winner = _improve(graph, profile, seed, stats, events, rooms)
    if winner is seed and seed.baseline:  # a baseline stands: re-split it stage by stage
        winner = _restage(graph, profile, seed, stats, events, work, rooms)
    stats.origin = winner.origin
    stats.is_baseline = winner.baseline
    stats.plan_seconds = time.perf_counter() - t0
    stats.plan_cpu_seconds = time.process_time() - cpu0
    return winner.placement, stats
