"""Simulator (hand-checked timings), baselines, planner vs baselines, memory limits."""
from __future__ import annotations

import pytest
from torch import nn

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import trace_model
from disco_zoo.planner import plan_edgeflow, profile_from_dict, simulate
from disco_zoo.planner.baselines import BASELINES, equal_split, layerwise_split, proportional_split, single_device
from disco_zoo.planner.units import extent, splittable

from helpers import Branchy, three_devices


def _two(rate0: float, rate1: float, bw: float, lat: float):
    return profile_from_dict({"devices": [{"name": "a", "flops": rate0}, {"name": "b", "flops": rate1}],
                              "links": {"default": {"bandwidth_bps": bw, "latency_s": lat}}})


def test_simulator_by_hand() -> None:
    g = trace_model(nn.Sequential(nn.Conv2d(1, 1, 1)), (1, 1, 8, 8))  # 128 FLOPs, 16 per row
    conv = g.of_op("conv")[0]
    assert conv.flops == 128
    prof = _two(32.0, 16.0, 1024.0, 0.5)  # 128 bytes take 1 s + 0.5 s latency
    placement = {l.name: [(0, extent(l)), (extent(l), extent(l))] for l in g}
    placement[conv.name] = [(0, 4), (4, 8)]
    sim = simulate(g, placement, prof)
    # b: input rows 4..8 arrive at 1.5 s, 4 rows x 16 FLOPs / 16 FLOP/s -> 5.5 s; a: 64/32 = 2 s;
    # the output (on a) gets b's 128 bytes at 5.5 + 1.5 = 7.0 s
    assert sim.latency_s == pytest.approx(7.0)
    assert sim.bytes_total == 256
    ev = {(e.layer, e.device): e for e in sim.timeline}
    assert ev[(conv.name, 1)].start == pytest.approx(1.5) and ev[(conv.name, 0)].finish == pytest.approx(2.0)
    assert sim.busy_s == pytest.approx([2.0, 4.0])


def test_baseline_shapes() -> None:
    g = trace_model(Branchy(), (1, 3, 16, 16))
    prof = three_devices()
    conv = g.of_op("conv")[0]
    assert [b - a for a, b in equal_split(g, prof)[conv.name]] == [6, 5, 5]
    assert [b - a for a, b in proportional_split(g, prof)[conv.name]] == [9, 5, 2]
    single = single_device(g, prof)
    assert all(single[l.name][0] == (0, extent(l)) for l in g)
    for make in BASELINES.values():
        placement = make(g, prof)
        assert all(sum(b - a for a, b in placement[l.name]) == extent(l) for l in g)


def test_layerwise_dp_follows_the_link() -> None:
    g = trace_model(Branchy(), (1, 3, 16, 16))
    fast_link = _two(1e6, 1e8, 1e12, 0.0)
    slow_link = _two(1e6, 1e8, 1e3, 1.0)
    on_b = layerwise_split(g, fast_link)
    assert all(on_b[l.name][1][1] > 0 for l in g.of_op("conv"))
    on_a = layerwise_split(g, slow_link)
    assert all(on_a[l.name][0][1] > 0 for l in g)
    assert simulate(g, on_b, fast_link).latency_s < simulate(g, single_device(g, fast_link, 0), fast_link).latency_s


def test_edgeflow_beats_baselines_on_a_compute_bound_profile() -> None:
    g = trace_model(Branchy(), (1, 3, 32, 32))
    prof = three_devices()
    placement, stats = plan_edgeflow(g, prof)
    ef = simulate(g, placement, prof).latency_s
    assert stats.dp_solves > 0 and not stats.is_baseline
    for name, make in BASELINES.items():
        assert ef <= simulate(g, make(g, prof), prof).latency_s * 1.0001, name
    assert any(sum(1 for a, b in placement[l.name] if b > a) > 1 for l in g if splittable(l))


def test_memory_excludes_devices_and_infeasible_is_clear() -> None:
    g = trace_model(Branchy(), (1, 3, 32, 32))
    roomy = profile_from_dict({"devices": [{"name": "a", "flops": 1e7, "memory_bytes": 1e9},
                                           {"name": "tiny", "flops": 1e9, "memory_bytes": 400}],
                               "links": {"default": {"bandwidth_bps": 1e9, "latency_s": 0}}})
    placement, _ = plan_edgeflow(g, roomy)
    for conv in g.of_op("conv"):  # every conv holds more than 400 bytes of weights
        assert placement[conv.name][1][0] == placement[conv.name][1][1]
    with pytest.raises(DiscoZooError, match="fits in memory"):
        plan_edgeflow(g, three_devices(memory=500))


@pytest.mark.parametrize("preset", ["wifi-pi4-nano-phone", "four-mixed-ethernet"])
def test_edgeflow_never_worse_than_single_fastest(preset: str) -> None:
    from disco_zoo.planner import load_profile

    g = trace_model(Branchy(), (1, 3, 32, 32))
    prof = load_profile(preset)
    placement, _ = plan_edgeflow(g, prof)
    assert simulate(g, placement, prof).latency_s <= simulate(g, single_device(g, prof), prof).latency_s + 1e-12


def test_memory_caps_by_hand() -> None:
    from disco_zoo.planner.lp import memory_caps

    g = trace_model(nn.Sequential(nn.Conv2d(1, 1, 1)), (1, 1, 8, 8))
    conv = g.of_op("conv")[0]  # 2 weights = 8 bytes; a row: 32 bytes out + 32 bytes in
    prof = profile_from_dict({"devices": [{"name": "a", "flops": 1, "memory_bytes": 8 + 64 * 3},
                                          {"name": "b", "flops": 1, "memory_bytes": 7},
                                          {"name": "c", "flops": 1}],
                              "links": {"default": {"bandwidth_bps": 1, "latency_s": 0}}})
    assert memory_caps(g, conv, [0.0, 0.0, 0.0], prof) == [3, 0, 8]
    assert memory_caps(g, conv, [64.0, 0.0, 0.0], prof) == [2, 0, 8]  # weights already held count


def test_messages_on_one_link_queue_in_the_replay() -> None:
    """Messages that share an ordered pair at the same moment: the replay (FIFO per pair,
    as the emulated links run) delivers the second after the first, where the LP's
    per-layer cost lets them overlap."""
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1)

        def forward(self, x):
            return self.c1(x) + self.c2(x)

    g = trace_model(TwoHeads(), (1, 1, 8, 8))
    prof = _two(1e9, 1e9, 1024.0, 0.0)  # compute is free; 256 bytes take 2 s
    on_a = {l.name: [(0, extent(l)), (extent(l), extent(l))] for l in g}
    placement = dict(on_a)
    for conv in g.of_op("conv"):
        placement[conv.name] = [(0, 0), (0, 8)]  # both convs on b; the add on a needs both outputs
    sim = simulate(g, placement, prof)
    # a sends b the input once per consuming unit (as the executor does): they queue, so c1
    # starts at 2 s and c2 at 4 s; their results (256 bytes each) reach a at 4 s and 6 s
    assert sim.latency_s == pytest.approx(6.0, rel=1e-6)
    from disco_zoo.planner.layer_cost import State, commit, layer_timing

    state = State(free=[0.0, 0.0])
    for layer in g:
        commit(state, layer, layer_timing(g, layer, placement[layer.name], placement, state, prof))
    assert max(state.finish[g.of_op("output")[0].name]) == pytest.approx(4.0, rel=1e-6)  # no contention: 2 + 2


@pytest.mark.parametrize("seed", range(4))
def test_the_lp_cost_is_a_lower_bound_of_the_reported_latency(seed: int) -> None:
    """The LP's per-layer cost lets links not contend; the replay queues messages per pair,
    so it can only be later, never earlier (and equal when nothing queues)."""
    import random

    from disco_zoo.planner.layer_cost import State, commit, layer_timing
    from disco_zoo.planner.lp import ranges_from_counts
    from helpers import random_profile

    rng = random.Random(seed)
    g = trace_model(Branchy(), (1, 3, 16, 16))
    n = rng.choice([2, 3])
    prof = random_profile(rng, n)
    placement = {}
    for layer in g:
        h = extent(layer)
        if splittable(layer):
            cuts = sorted(rng.randint(0, h) for _ in range(n - 1))
            counts = [e - s for s, e in zip([0] + cuts, cuts + [h])]
        else:
            counts = [h] + [0] * (n - 1)
        placement[layer.name] = ranges_from_counts(counts)
    state = State(free=[0.0] * n)
    for layer in g:
        commit(state, layer, layer_timing(g, layer, placement[layer.name], placement, state, prof))
    lp_latency = max(state.finish[g.of_op("output")[0].name])
    assert simulate(g, placement, prof).latency_s >= lp_latency * (1 - 1e-9)


def test_gantt_draws_the_replays_timeline(tmp_path) -> None:
    from disco_zoo.planner.gantt import draw_gantt

    g = trace_model(Branchy(), (1, 3, 16, 16))
    prof = three_devices()
    sim = simulate(g, proportional_split(g, prof), prof)
    assert {e.device for e in sim.timeline} == {0, 1, 2}
    assert all(e.finish <= sim.latency_s + 1e-12 for e in sim.timeline)
    draw_gantt(sim, prof, tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000


PRESETS = ["wifi-pi4-nano-phone", "ethernet-pi4-nano-phone", "wifi-phone-pi4x2", "four-mixed-ethernet"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet50", "googlenet", "densenet121", "mobilenet_v2"])
def test_edgeflow_never_worse_than_any_baseline_on_the_presets(model: str) -> None:
    """At 224x224 on every preset: the plan is predicted no slower than each baseline, and a
    plan that is a baseline's says so (the bench prints by how much each one is beaten)."""
    from disco_zoo.planner import load_profile
    from disco_zoo.planner.report import build_graph

    g = build_graph(model, 224, 10)
    for preset in PRESETS:
        prof = load_profile(preset)
        placement, stats = plan_edgeflow(g, prof)
        ef = simulate(g, placement, prof).latency_s
        for name, make in BASELINES.items():
            assert ef <= simulate(g, make(g, prof), prof).latency_s * (1 + 1e-12), (preset, name)
        if stats.is_baseline:  # said plainly, and true
            assert placement == BASELINES[stats.origin.removeprefix("baseline ")](g, prof)


@pytest.mark.parametrize("model", ["branchy", "mobilenet_v2", "densenet121"])
def test_the_search_replay_equals_the_unit_programs_replay(model: str) -> None:
    """:func:`predicted_latency` plays layer by layer from per-layer compute times and sends
    (cached across candidates), not from units: on every baseline placement and on random
    row splits it must give the latency of the replay of :func:`plan_programs` over
    :func:`build_units`, the programs the executor and `simulate` use, to the last bit, with
    one cache shared by all placements (DenseNet: layers read by many concats)."""
    import random

    from disco_zoo.planner.programs import plan_programs
    from disco_zoo.planner.simulate import predicted_latency
    from disco_zoo.planner.lp import ranges_from_counts
    from disco_zoo.planner.units import build_units
    from disco_zoo.registry import build_model
    from disco_zoo.timing.replay import replay

    net, shape = (Branchy(), (1, 3, 16, 16)) if model == "branchy" else (build_model(model), (1, 3, 32, 32))
    g = trace_model(net.eval(), shape)
    prof = three_devices()
    rng = random.Random(0)
    placements = [make(g, prof) for make in BASELINES.values()]
    for _ in range(6):
        placement = dict(placements[0])
        for layer in g:
            if splittable(layer) and layer.op not in ("input", "output") and rng.random() < 0.5:
                cuts = sorted(rng.randint(0, extent(layer)) for _ in range(len(prof) - 1))
                placement[layer.name] = ranges_from_counts([b - a for a, b in zip([0, *cuts], [*cuts, extent(layer)])])
        placements.append(placement)
    cache: dict = {}
    for placement in placements:
        want = replay(plan_programs(g, build_units(g, placement), prof), prof.links()).latency_s
        assert predicted_latency(g, placement, prof, cache) == want


def test_a_replay_continued_from_a_prefix_equals_the_whole_replay() -> None:
    """:func:`replay_prefix` + ``predicted_latency(prefix=...)`` (the stage re-splits' shortcut)
    gives the whole replay's latency to the last bit for placements that differ from the
    prefix's only in layers at or after its index, none of which the layers before it send to."""
    import random

    from disco_zoo.planner.lp import ranges_from_counts
    from disco_zoo.planner.simulate import predicted_latency, replay_prefix
    from disco_zoo.registry import build_model

    g = trace_model(build_model("densenet121").eval(), (1, 3, 32, 32))
    prof = three_devices()
    layers = list(g)
    order = {layer.name: i for i, layer in enumerate(layers)}
    rng = random.Random(1)
    base = BASELINES["proportional-split"](g, prof)
    cache: dict = {}
    for _ in range(12):
        index = rng.randrange(1, len(layers))
        changed = [l for l in layers[index:] if splittable(l) and l.op not in ("input", "output")
                   and all(order[p] >= index for p in l.predecessors) and rng.random() < 0.5]
        placement = dict(base)
        for layer in changed:
            cuts = sorted(rng.randint(0, extent(layer)) for _ in range(len(prof) - 1))
            placement[layer.name] = ranges_from_counts([b - a for a, b in zip([0, *cuts], [*cuts, extent(layer)])])
        prefix = replay_prefix(g, base, prof, cache, index)
        want = predicted_latency(g, placement, prof, {})
        assert predicted_latency(g, placement, prof, cache, prefix) == want
        assert predicted_latency(g, placement, prof, cache, prefix) == want  # the prefix is not used up
