"""Per-layer splits against brute force (the old LP within 5%, the exact DP equal), and the search
never worse than its greedy sweep or a baseline."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import typer

from disco_zoo.graph import trace_model
from disco_zoo.planner.baselines import BASELINES, equal_split, single_device
from disco_zoo.planner.boundary_dp import TIE, copies_split, dp_split, readers
from disco_zoo.planner.lp import (
    brute_force_counts, device_subsets, plan_layers, ranges_from_counts, round_counts, split_layer,
)
from disco_zoo.planner.layer_cost import State, commit, layer_timing
from disco_zoo.planner.search import busy_bound, compute_bound, plan_edgeflow
from disco_zoo.planner.simulate import simulate
from disco_zoo.planner.units import extent, splittable

from helpers import Branchy, random_profile, three_devices


def test_round_counts_sums_and_largest_remainder() -> None:
    assert round_counts([1.5, 1.5, 1.0], 4) == [2, 1, 1]
    assert sum(round_counts([0.2, 7.7, 3.1], 11)) == 11
    assert round_counts([0.0, 0.0], 3) in ([2, 1], [1, 2])


def _random_counts(rng: random.Random, h: int, n: int) -> list[int]:
    cuts = sorted(rng.randint(0, h) for _ in range(n - 1))
    return [e - s for s, e in zip([0] + cuts, cuts + [h])]


@pytest.mark.parametrize("seed", range(8))
def test_lp_matches_brute_force_on_random_graphs(seed: int) -> None:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = Branchy(k1=rng.choice([1, 3, 5]), s1=rng.choice([1, 2]), k2=rng.choice([3, 5]),
                  d2=rng.choice([1, 2]), pool=rng.choice([2, 3]))
    size = rng.choice([16, 24, 32])
    graph = trace_model(net, (1, 3, size, size))
    n = rng.choice([2, 3])
    profile = random_profile(rng, n)
    placement: dict = {}
    state = State(free=[0.0] * n)
    checked = 0
    for layer in graph:
        h = extent(layer)
        if splittable(layer) and (layer.flops > 0 or len(layer.predecessors) > 1):
            lp_counts, lp_cost = split_layer(graph, layer, placement, state, profile)
            bf_counts, bf_cost = brute_force_counts(graph, layer, placement, state, profile)
            assert sum(lp_counts) == h
            assert lp_cost <= bf_cost * 1.05 + 1e-12, (layer.name, lp_counts, lp_cost, bf_counts, bf_cost)
            checked += 1
        # predecessors get random (often misaligned) splits so halos and multi-sender reads matter
        counts = _random_counts(rng, h, n) if splittable(layer) else [h] + [0] * (n - 1)
        placement[layer.name] = ranges_from_counts(counts)
        commit(state, layer, layer_timing(graph, layer, placement[layer.name], placement, state, profile))
    assert checked >= 5


def _random_suite(seed: int):
    """The random suite above: a Branchy graph, a 2-3 device profile, random predecessor splits."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = Branchy(k1=rng.choice([1, 3, 5]), s1=rng.choice([1, 2]), k2=rng.choice([3, 5]),
                  d2=rng.choice([1, 2]), pool=rng.choice([2, 3]))
    graph = trace_model(net, (1, 3, rng.choice([16, 24, 32]), rng.choice([16, 24, 32])))
    n = rng.choice([2, 3])
    return rng, graph, n, random_profile(rng, n)


@pytest.mark.parametrize("seed", range(8))
def test_exact_split_is_the_brute_force_optimum(seed: int) -> None:
    rng, graph, n, profile = _random_suite(seed)
    placement: dict = {}
    state = State(free=[0.0] * n)
    checked = 0
    for layer in graph:
        h = extent(layer)
        if splittable(layer) and (layer.flops > 0 or len(layer.predecessors) > 1):
            caps = [rng.choice([h, h, max(1, h // 3)]) for _ in range(n)]
            if sum(caps) >= h:
                counts, best = dp_split(graph, layer, placement, state, profile, caps)
                finish = layer_timing(graph, layer, ranges_from_counts(counts), placement, state, profile).done
                _, bf_cost = brute_force_counts(graph, layer, placement, state, profile, caps)
                assert sum(counts) == h and all(c <= cap for c, cap in zip(counts, caps))
                assert best == pytest.approx(bf_cost, rel=1e-9), (layer.name, counts, caps)
                assert finish <= bf_cost * (1 + TIE) + 1e-12  # the fewest-bytes split within the tie band
                lp_counts, lp_cost = split_layer(graph, layer, placement, state, profile, caps)
                assert finish <= lp_cost * (1 + TIE) + 1e-12  # never worse than the LP's split
                checked += 1
        counts = _random_counts(rng, h, n) if splittable(layer) else [h] + [0] * (n - 1)
        placement[layer.name] = ranges_from_counts(counts)
        commit(state, layer, layer_timing(graph, layer, placement[layer.name], placement, state, profile))
    assert checked >= 3


def test_exact_split_refuses_when_nothing_fits() -> None:
    graph = trace_model(Branchy(), (1, 3, 16, 16))
    profile = random_profile(random.Random(0), 2)
    layer = graph["stem"]
    placement = {"x": ranges_from_counts([16, 0])}
    state = State(free=[0.0, 0.0], finish={"x": [0.0, float("-inf")]})
    assert dp_split(graph, layer, placement, state, profile, [5, 5]) is None
    assert sum(dp_split(graph, layer, placement, state, profile, [8, 8])[0]) == 16


def test_readers_look_through_copying_layers() -> None:
    graph = trace_model(Branchy(), (1, 3, 32, 32))
    assert copies_split(graph, graph["bn"]) and not copies_split(graph, graph["add"])
    assert sorted((r.name, k) for r, k in readers(graph, graph["stem"])) == [("a", 0), ("add", 0)]
    assert [(r.name, k) for r, k in readers(graph, graph["a"])] == [("add", 1)]


@pytest.mark.parametrize("seed", range(6))
def test_search_is_never_worse_than_the_greedy_sweep_or_a_baseline(seed: int) -> None:
    _, graph, n, profile = _random_suite(seed)
    placement, stats = plan_edgeflow(graph, profile)
    latency = simulate(graph, placement, profile).latency_s
    for allowed in device_subsets(profile):  # every subset, none pruned: the bound must not lose one
        greedy = plan_layers(graph, profile, allowed)
        assert latency <= simulate(graph, greedy, profile).latency_s * (1 + 1e-12), allowed
    for name, make in BASELINES.items():
        assert latency <= simulate(graph, make(graph, profile), profile).latency_s * (1 + 1e-12), name
    assert stats.origin and stats.dp_solves > 0 and stats.passes >= 1


@pytest.mark.parametrize("seed", range(4))
def test_bounds_are_below_every_plan(seed: int) -> None:
    _, graph, n, profile = _random_suite(seed)
    every = set(range(n))
    for make in BASELINES.values():
        placement = make(graph, profile)
        latency = simulate(graph, placement, profile).latency_s
        assert compute_bound(graph, profile, every) <= busy_bound(graph, placement, profile) <= latency
    one = single_device(graph, profile, 0)
    assert compute_bound(graph, profile, {0}) == pytest.approx(simulate(graph, one, profile).latency_s, rel=1e-9)


def test_a_baseline_that_wins_is_said_plainly(monkeypatch) -> None:
    """When no EdgeFlow candidate beats a baseline, the plan is that baseline's and the output says so."""
    from typer.testing import CliRunner

    import disco_zoo.planner.search as search
    from disco_zoo.commands import plan as plan_cmd

    def hopeless(graph, profile, stop_at, allowed=None, stats=None, solver="dp", ahead=None,  # noqa: ANN001, ANN202
                 rooms=None):  # noqa: ANN001
        return equal_split(graph, profile)  # stands in for a greedy sweep that loses to the baselines

    monkeypatch.setattr(search, "plan_layers_until", hopeless)
    graph = trace_model(Branchy(), (1, 3, 32, 32))
    profile = three_devices()
    placement, stats = search.plan_edgeflow(graph, profile)
    best = min(BASELINES, key=lambda b: simulate(graph, BASELINES[b](graph, profile), profile).latency_s)
    assert stats.is_baseline and stats.origin == f"baseline {best}"
    assert placement == BASELINES[best](graph, profile)
    app = typer.Typer()
    plan_cmd.register(app)
    res = CliRunner().invoke(app, ["plan", "mobilenet_v2", "--devices", "four-mixed-ethernet", "--input-size", "32"])
    assert res.exit_code == 0, res.output
    assert "EdgeFlow found no plan faster than the" in " ".join(res.output.split())


def test_dp_overlap_and_compute_caches_equal_the_direct_arrays() -> None:
    """The DP's value-keyed caches (overlap of needed rows with a sender range, compute per range)
    hand back exactly the arrays the direct formulas make, read-only so no caller can change them."""
    from disco_zoo.planner.boundary_dp import _compute_rows, _needed_by_input, _overlap, _rows

    graph = trace_model(Branchy(k1=5, s1=2, k2=3, d2=2, pool=3), (1, 3, 24, 24))
    rng = random.Random(0)
    checked = 0
    for layer in graph:
        if not splittable(layer) or layer.op in ("input", "output"):
            continue
        h = extent(layer)
        for lo, hi, need in _needed_by_input(layer):
            for _ in range(4):
                c = rng.randint(0, int(hi.max()))
                d = rng.randint(c, int(hi.max()))
                got = _overlap(need, c, d)
                want = np.maximum(np.minimum(hi[None, :], d) - np.maximum(lo[:, None], c), 0)
                assert np.array_equal(got, want) and got.dtype == want.dtype and not got.flags.writeable
                checked += 1
        rates = (3e9, 1e10)
        want = _rows(h)[None] * np.array([layer.flops / h / r for r in rates])[:, None, None]
        assert np.array_equal(_compute_rows(layer.flops, h, rates), want)
    assert checked >= 20


@pytest.mark.parametrize("seed", range(4))
def test_memory_check_is_every_layers_caps_in_turn(seed: int) -> None:
    """:func:`fits_memory` (its loop inlined for the search) says what checking each layer's
    :func:`memory_caps` in topological order says, on random splits and memories: some fit, some not."""
    from disco_zoo.planner.lp import _feasible, fits_memory, memory_caps

    rng, graph, n, _ = _random_suite(seed)
    largest = max(layer.output_bytes + sum(graph[p].output_bytes for p in layer.predecessors) for layer in graph)

    def reference(placement: dict, profile: object) -> bool:
        held = [0.0] * len(profile)
        for layer in graph:
            counts = [b - a for a, b in placement[layer.name]]
            if layer.op not in ("input", "output") and not _feasible(counts, memory_caps(graph, layer, held, profile)):
                return False
            for i, c in enumerate(counts):
                if c > 0:
                    held[i] += layer.params * graph.dtype_bytes
        return True

    seen = set()
    for _ in range(30):
        profile = three_devices(memory=largest * rng.choice([0.2, 0.5, 0.8, 1.5, 50.0]))
        placement = {layer.name: ranges_from_counts(_random_counts(rng, extent(layer), 3) if splittable(layer)
                                                    else [extent(layer), 0, 0]) for layer in graph}
        want = reference(placement, profile)
        assert fits_memory(graph, placement, profile) == want
        seen.add(want)
    assert seen == {True, False}


@pytest.mark.parametrize("seed", range(6))
def test_finish_bound_never_stops_a_sweep_before_its_own_finish(seed: int) -> None:
    """The sweep gives up once :func:`finish_bound` (devices' free times plus the FLOPs still to
    place) reaches ``stop_at``: on every subset, a stop at its own plan's per-layer finish (a lower
    bound of its replay) must never trigger, so the bound is below every plan it rules out."""
    from disco_zoo.planner.lp import plan_layers_until

    rng, graph, n, profile = _random_suite(seed)
    for allowed in device_subsets(profile):
        placement = plan_layers(graph, profile, allowed)
        state = State(free=[0.0] * n)
        for layer in graph:
            commit(state, layer, layer_timing(graph, layer, placement[layer.name], placement, state, profile))
        finish = max(state.free)
        assert finish <= simulate(graph, placement, profile).latency_s * (1 + 1e-12)
        assert plan_layers_until(graph, profile, finish * (1 + 1e-9), allowed) == placement
