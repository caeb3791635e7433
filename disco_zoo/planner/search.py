"""EdgeFlow's whole-model search: greedy sweeps per device subset, baselines as seeds, look-ahead passes.

Why a search around the per-layer optimum: each layer's split is exact for its own finish
(:mod:`disco_zoo.planner.boundary_dp`) but greedy for the model's: a split that ends one
layer sooner can misalign the layers after it and cost traffic later. So

1. the greedy sweep runs over device subsets, largest first; a subset is skipped when a
   lower bound of any plan on it (all FLOPs over its summed rates, no traffic) cannot beat
   the best plan found so far;
2. the baselines (:mod:`disco_zoo.planner.baselines`) that fit in memory are candidates too;
3. an improvement pass re-solves every layer looking ahead to its readers' splits in the
   previous plan (``plan_layers(ahead=...)``), from the best greedy plan and from the best
   baseline, and iterates until a pass gains less than ``MIN_GAIN``.

Every candidate is scored by the model of time's replay (:func:`predicted_latency`); the lowest
wins, so the plan is never predicted worse than a baseline that fits. Where the winner is
a baseline's plan unchanged, :attr:`PlanStats.origin` says so.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import LayerGraph
from disco_zoo.planner.baselines import BASELINES
from disco_zoo.planner.lp import PlanStats, device_subsets, fits_memory, plan_layers, ranges_from_counts, round_counts
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.simulate import predicted_latency
from disco_zoo.planner.units import Placement, extent, splittable

__all__ = ["MIN_GAIN", "MAX_PASSES", "plan_edgeflow", "compute_bound"]

MIN_GAIN = 1e-3  # an improvement pass that gains less than 0.1% ends the iteration
MAX_PASSES = 8


@dataclass
class _Candidate:
    placement: Placement
    latency_s: float
    origin: str
    devices: set[int]


def compute_bound(graph: LayerGraph, profile: Profile, devices: set[int]) -> float:
    """A lower bound of any plan's latency on ``devices``: every FLOP at the summed best rates, no traffic."""
    rate = sum(max([d.flops, *d.flops_by_op.values()]) for i, d in enumerate(profile.devices) if i in devices)
    return sum(layer.flops for layer in graph) / rate


def _used(placement: Placement, graph: LayerGraph) -> set[int]:
    return {i for layer in graph if layer.op not in ("input", "output")
            for i, (a, b) in enumerate(placement[layer.name]) if b > a}


def _improve(graph: LayerGraph, profile: Profile, seed: _Candidate, stats: PlanStats) -> _Candidate:
    """Look-ahead passes from ``seed`` until one gains < MIN_GAIN; the best plan seen."""
    best, current = seed, seed.placement
    for _ in range(MAX_PASSES):
        try:
            placement = plan_layers(graph, profile, seed.devices, stats, ahead=current)
        except DiscoZooError:
            break
        stats.passes += 1
        latency = predicted_latency(graph, placement, profile)
        gain = (best.latency_s - latency) / best.latency_s
        if latency < best.latency_s:
            best = _Candidate(placement, latency, f"{seed.origin}, improved by look-ahead", seed.devices)
        if gain < MIN_GAIN:
            break
        current = placement
    return best


def _restage(graph: LayerGraph, profile: Profile, seed: _Candidate, stats: PlanStats) -> _Candidate:
    """Hybrid of layer-wise and row splits: each stage (the layers of one height) in turn
    split in proportion to the rates of the k fastest devices, k = 1..n, or kept; the best
    by the replay is kept before the next stage."""
    by_rate = sorted(range(len(profile)), key=lambda i: -profile.devices[i].rate("conv"))
    best = seed
    for rows in sorted({extent(l) for l in graph if splittable(l) and l.op not in ("input", "output")}, reverse=True):
        for k in range(1, len(profile) + 1):
            weights = [profile.devices[i].rate("conv") if i in by_rate[:k] else 0.0 for i in range(len(profile))]
            split = ranges_from_counts(round_counts(weights, rows))
            placement = dict(best.placement)
            for layer in graph:
                if splittable(layer) and extent(layer) == rows and layer.op not in ("input", "output"):
                    placement[layer.name] = split
            if placement == best.placement or not fits_memory(graph, placement, profile):
                continue
            stats.restaged += 1
            latency = predicted_latency(graph, placement, profile)
            if latency < best.latency_s:
                best = _Candidate(placement, latency, f"{seed.origin}, re-split by stage", _used(placement, graph))
    return best


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
    baselines: list[_Candidate] = []
    for name, make in BASELINES.items():
        placement = make(graph, profile)
        same = next((c for c in baselines if c.placement == placement), None)
        if same is not None:
            baselines.append(_Candidate(placement, same.latency_s, f"baseline {name}", same.devices))
        elif fits_memory(graph, placement, profile):
            baselines.append(_Candidate(placement, predicted_latency(graph, placement, profile),
                                        f"baseline {name}", _used(placement, graph)))
    best = min((c.latency_s for c in baselines), default=math.inf)
    greedy: list[_Candidate] = []
    full_error: DiscoZooError | None = None
    for allowed in sorted(device_subsets(profile), key=len, reverse=True):
        if compute_bound(graph, profile, allowed) >= best:
            stats.subsets_pruned += 1
            continue
        try:
            placement = plan_layers(graph, profile, allowed, stats)
        except DiscoZooError as err:
            if len(allowed) == len(profile):
                full_error = err  # names every device's room, the clearest message
            continue
        names = "+".join(profile.devices[i].name for i in sorted(allowed))
        greedy.append(_Candidate(placement, predicted_latency(graph, placement, profile),
                                 f"greedy on {names}", allowed))
        best = min(best, greedy[-1].latency_s)
    if not greedy and not baselines:
        raise full_error or DiscoZooError("no device subset can hold the model; give devices more memory_bytes")
    seed = min(greedy + baselines, key=lambda c: c.latency_s)
    winner = _improve(graph, profile, seed, stats)
    if winner is seed and seed in baselines:  # a baseline stands: re-split it stage by stage
        winner = _restage(graph, profile, seed, stats)
    stats.origin = winner.origin
    stats.is_baseline = winner is seed and seed in baselines
    stats.plan_seconds = time.perf_counter() - t0
    stats.plan_cpu_seconds = time.process_time() - cpu0
    return winner.placement, stats
