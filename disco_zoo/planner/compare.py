"""One comparison of every way to run a model on a profile: when DISCO wins, when EdgeFlow does.

Every strategy is scored by the one model of time (the replay) on the same profile:

* ``single-fastest``, ``equal-split``, ``proportional-split``, ``layer-wise``: the EdgeFlow
  baselines over the dense model (:mod:`disco_zoo.planner.baselines`);
* ``edgeflow``: the EdgeFlow plan of the dense model (:func:`plan_edgeflow`);
* ``dense-tp``: dense within-layer parallelism, i.e. a DISCO variant's partition with every
  channel exchanged, on that variant's best placement;
* ``disco <name>``: each published DISCO variant on its best placement.

Each row gives the predicted latency, the bytes moved, and the largest device's memory
(EdgeFlow: the weights of every layer a device computes rows of; DISCO: the node's fp32
parameters and activation peak). :func:`with_link` re-runs a profile at one link speed
for every pair, so a table can show a fast LAN next to slow Wi-Fi.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from disco_zoo.graph import LayerGraph
from disco_zoo.planner.baselines import BASELINES
from disco_zoo.planner.disco_plan import DiscoFacts, node_memory_bytes, place_disco
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.search import plan_edgeflow
from disco_zoo.planner.simulate import simulate
from disco_zoo.planner.units import Placement
from disco_zoo.timing.links import Link

__all__ = ["StrategyResult", "compare_strategies", "with_link", "LINK_SPEEDS", "edgeflow_memory"]

LINK_SPEEDS = {"fast LAN": Link(1e9, 2e-4), "slow Wi-Fi": Link(2e7, 3e-3)}  # (bits/s, s): 1 Gbit/s; 20 Mbit/s


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    latency_s: float
    bytes_total: int
    max_memory_bytes: int
    devices: tuple[str, ...]  # the devices it computes on

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "latency_s": self.latency_s, "bytes": self.bytes_total,
                "max_memory_bytes": self.max_memory_bytes, "devices": list(self.devices)}


def with_link(profile: Profile, link: Link, label: str) -> Profile:
    """``profile`` with every pair on ``link`` (its devices unchanged)."""
    return replace(profile, name=f"{profile.name} @ {label}", default_link=link, pair_links={})


def edgeflow_memory(graph: LayerGraph, placement: Placement, profile: Profile) -> list[int]:
    """Bytes each device holds: the weights of every layer it computes rows of (what
    :func:`disco_zoo.planner.lp.fits_memory` charges)."""
    held = [0] * len(profile)
    for layer in graph:
        for i, (a, b) in enumerate(placement[layer.name]):
            if b > a:
                held[i] += layer.params * graph.dtype_bytes
    return held


def _edgeflow_row(name: str, graph: LayerGraph, placement: Placement, profile: Profile) -> StrategyResult:
    sim = simulate(graph, placement, profile)
    memory = edgeflow_memory(graph, placement, profile)
    used = tuple(profile.devices[i].name for i in range(len(profile))
                 if any(b > a for a, b in (placement[l.name][i] for l in graph if l.op not in ("input", "output"))))
    return StrategyResult(name, sim.latency_s, sim.bytes_total, max(memory), used)


def _disco_row(name: str, facts: DiscoFacts, profile: Profile, dense_tp: bool = False) -> StrategyResult:
    part = facts.partition.with_all_open() if dense_tp else facts.partition
    memory = node_memory_bytes(facts, part) if dense_tp else None
    best = place_disco(facts, profile, part, memory)[0]
    return StrategyResult(name, best.latency_s, best.bytes_total, max(best.memory_per_node),
                          tuple(profile.devices[d].name for d in best.devices))


def compare_strategies(graph: LayerGraph, profile: Profile, variants: dict[str, DiscoFacts]) -> list[StrategyResult]:
    """Every strategy on ``profile`` for the dense model traced as ``graph`` and its
    published DISCO ``variants`` (name -> facts at the graph's input size)."""
    rows = [_edgeflow_row(name, graph, make(graph, profile), profile) for name, make in BASELINES.items()]
    placement, _ = plan_edgeflow(graph, profile)
    rows.append(_edgeflow_row("edgeflow", graph, placement, profile))
    if variants:
        first = next(iter(variants.values()))
        rows.append(_disco_row("dense-tp", first, profile, dense_tp=True))
    rows += [_disco_row(f"disco {name}", facts, profile) for name, facts in variants.items()]
    return rows
