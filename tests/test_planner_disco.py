"""DISCO on device profiles: programs derived from the partition, placement, split ratio."""
import json

import pytest
import torch
from torch import nn

from disco_zoo.disco.accounting import disco_accounting, layer_shapes, wire_bytes_per_pair
from disco_zoo.disco.adapters import to_disco
from disco_zoo.errors import DiscoZooError
from disco_zoo.planner import profile_from_dict
from disco_zoo.planner.disco_plan import disco_facts, place_disco, ratio_sweep
from disco_zoo.planner.disco_programs import disco_programs
from disco_zoo.runtime.disco_executor import disco_tags
from disco_zoo.runtime.profiling import profile_compute
from disco_zoo.runtime.wire import tag_id
from helpers import DISCO_SHAPE, graph_disco_folder, sparse_disco_folder

SHAPE = (1, 4, 16, 16)


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))


def _profile(memory=None, bandwidth=1e12):
    mem = {} if memory is None else {"memory_bytes": memory}
    return profile_from_dict({"devices": [{"name": "fast", "flops": 2e9, **mem}, {"name": "slow", "flops": 1e9, **mem},
                                          {"name": "slowest", "flops": 2.5e8, **mem}],
                              "links": {"default": {"bandwidth_bps": bandwidth, "latency_s": 0.0}}})


@pytest.fixture
def tiny_two_outputs():
    from disco_zoo.registry import ModelEntry, register_model, unregister_model

    register_model(ModelEntry("tiny_grouped_two_outputs", "helpers:TinyGroupedTwoOutputs", "test", "test"))
    yield "tiny_grouped_two_outputs"
    unregister_model("tiny_grouped_two_outputs")


@pytest.fixture
def tiny_shared():
    from disco_zoo.registry import ModelEntry, register_model, unregister_model

    entries = {"tiny_shared_head": "helpers:TinySharedHead", "tiny_shared_depthwise": "helpers:TinySharedDepthwise"}
    for arch, builder in entries.items():
        register_model(ModelEntry(arch, builder, "test", "test"))
    yield
    for arch in entries:
        unregister_model(arch)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "two outputs", "shared head", "shared depthwise"])
def test_derived_programs_follow_the_executors_message_schedule_and_bytes(tmp_path, arch, request):
    """ResNet (splits, reduce head), MobileNetV2 (depthwise convs), a DAG with grouped
    convs, a concat, a pixel shuffle and a gathered second output, and a two-level FPN
    whose tower and head are shared across its levels (each call its own messages)."""
    if arch == "resnet18":
        folder, model, part = sparse_disco_folder(tmp_path, 2)
    elif arch == "mobilenet_v2":
        folder, model, part = graph_disco_folder(tmp_path, "mobilenet_v2", 2, args={"num_classes": 10})
    elif arch.startswith("shared"):
        request.getfixturevalue("tiny_shared")
        folder, model, part = graph_disco_folder(tmp_path, f"tiny_{arch.replace(' ', '_')}", 2, (0.7, 0.3))
        assert {n: l.calls for n, l in part.layers.items() if l.calls > 1} == (
            {"tower.0": 2, "cls": 2} if arch == "shared head" else {"head": 2})
    else:
        folder, model, part = graph_disco_folder(tmp_path, request.getfixturevalue("tiny_two_outputs"), 2)
    measured = profile_compute(folder, DISCO_SHAPE, repeats=1, warmup=0)
    facts = disco_facts(model, arch, tuple(DISCO_SHAPE))
    acc = disco_accounting(model, tuple(DISCO_SHAPE))
    shapes = layer_shapes(model, tuple(DISCO_SHAPE))
    derived = disco_programs(part, shapes, acc.flops_per_entry, [1e9, 1e9], tuple(DISCO_SHAPE),
                             grouped_flops=facts.grouped_flops)
    tags = disco_tags(part)
    for got, want in zip(derived.programs, measured.programs):
        assert [(e.kind, e.peer, tag_id(tags[e.tag]), e.nbytes) for e in got.events] == \
               [(e.kind, e.peer, e.tag, e.nbytes) for e in want.events]
    assert derived.bytes_per_pair == wire_bytes_per_pair(part, shapes, tuple(DISCO_SHAPE), 4)
    # FLOPs over a rate: each node's compute is its accounted FLOPs at 1 GFLOP/s
    for k, program in enumerate(derived.programs):
        assert program.compute_s == pytest.approx(acc.flops_per_node[k] / 1e9, rel=1e-6)


def test_placement_uses_the_fastest_devices_and_the_split_follows_their_speeds():
    model = to_disco(_tiny(), 2).eval()
    model.disco_partition = model.disco_partition.with_all_closed()  # compute-bound: no layer traffic
    facts = disco_facts(model, "tiny", SHAPE)
    placements = place_disco(facts, _profile())
    best = placements[0]
    assert sorted(best.devices) == [0, 1]  # the slowest device stays unused
    # hand-worked: at rates 2:1 the equal split waits for the slow device's half
    flops = [sum(v) for v in [disco_accounting(model, SHAPE).flops_per_node]][0]
    assert best.latency_s == pytest.approx(max(flops / 2 / 1e9, flops / 2 / 2e9), rel=0.02)
    sweep = ratio_sweep(facts, _tiny(), _profile(), best.devices)
    optimum = min(sweep, key=lambda p: p.latency_s)
    fast_share = optimum.ratios[best.devices.index(0)]
    assert 0.55 <= fast_share <= 0.7  # work ~ share^2 per conv: the fast device's share is ~sqrt(2)/(1+sqrt(2))
    assert optimum.latency_s < 0.85 * best.latency_s
    # the sweep at the trained split reproduces the placement's own prediction
    at_half = next(p for p in sweep if p.ratios[0] == 0.5)
    assert at_half.latency_s == pytest.approx(best.latency_s, rel=1e-9)


def test_placement_errors_name_what_is_missing():
    model = to_disco(_tiny(), 2).eval()
    facts = disco_facts(model, "tiny", SHAPE)
    one = profile_from_dict({"devices": [{"name": "solo", "flops": 1e9}],
                             "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 0.0}}})
    with pytest.raises(DiscoZooError, match="2 nodes but profile .* has 1 device"):
        place_disco(facts, one)
    with pytest.raises(DiscoZooError, match="no device .* has memory for a shard"):
        place_disco(facts, _profile(memory=1024))


def test_a_slow_link_keeps_the_split_even_when_traffic_dominates():
    model = to_disco(_tiny(), 2).eval()  # masks open: dense within-layer traffic
    facts = disco_facts(model, "tiny", SHAPE)
    best = place_disco(facts, _profile(bandwidth=1e6))[0]
    sweep = ratio_sweep(facts, _tiny(), _profile(bandwidth=1e6), best.devices)
    assert all(p.bytes_total > 0 for p in sweep)
    assert min(sweep, key=lambda p: p.latency_s).latency_s <= best.latency_s + 1e-12



def _plan(*args):
    from typer.testing import CliRunner

    from disco_zoo.cli import app

    return CliRunner().invoke(app, ["plan", "resnet18-disco-2node", "--devices", "ethernet-pi4-nano-phone", *args])


def test_plan_command_places_a_published_disco_model():
    result = _plan("--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["kind"] == "disco" and len(doc["placement"]["devices"]) == 2
    assert len(doc["unused_devices"]) == 1
    assert doc["closest_published"]["optimum_gain"] >= 1.0
    assert min(p["latency_s"] for p in doc["ratio_sweep"]) == pytest.approx(doc["optimum"]["latency_s"])


def test_plan_command_refuses_a_split_no_published_variant_serves():
    result = _plan("--ratios", "0.7,0.3")
    assert result.exit_code != 0 and isinstance(result.exception, DiscoZooError)
    assert "no published variant of resnet18.digits on 2 nodes is split 0.70/0.30" in str(result.exception)


def test_compare_scores_every_strategy_on_each_link_setting(tmp_path):
    plot = tmp_path / "bars.png"
    result = _plan("--compare", "--plot", str(plot), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["tables"]) == {"as profiled", "fast LAN", "slow Wi-Fi"}
    for rows in doc["tables"].values():
        names = [r["strategy"] for r in rows]
        assert {"single-fastest", "equal-split", "proportional-split", "layer-wise", "edgeflow", "dense-tp"} <= set(names)
        assert "disco resnet18_disco_2node.digits" in names
        disco = next(r for r in rows if r["strategy"] == "disco resnet18_disco_2node.digits")
        dense_tp = next(r for r in rows if r["strategy"] == "dense-tp")
        assert disco["bytes"] < dense_tp["bytes"] and disco["latency_s"] < dense_tp["latency_s"]
        assert len(next(r for r in rows if r["strategy"] == "single-fastest")["devices"]) == 1
    # the slow link hurts every strategy that talks, never the one that does not
    fast, slow = doc["tables"]["fast LAN"], doc["tables"]["slow Wi-Fi"]
    for a, b in zip(fast, slow):
        assert b["latency_s"] >= a["latency_s"] - 1e-12
    assert plot.stat().st_size > 1000


def _tiny_plan(tmp_path, flops=2e8):
    from disco_zoo.hub import load_folder
    from disco_zoo.planner.disco_plan_file import DiscoPlan, partition_fingerprint, save_disco_plan

    folder, _, _ = sparse_disco_folder(tmp_path, 2)
    profile = profile_from_dict({"devices": [{"name": "a", "flops": flops}, {"name": "b", "flops": flops / 2}],
                                 "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 1e-3}}})
    facts = disco_facts(load_folder(folder), str(folder), tuple(DISCO_SHAPE))
    best = place_disco(facts, profile)[0]
    path = tmp_path / "plan.json"
    save_disco_plan(DiscoPlan(str(folder), facts.input_shape, profile, best.devices,
                              partition_fingerprint(facts.partition), {"latency_s": best.latency_s}), path)
    return path


@pytest.mark.slow
def test_run_plan_executes_a_disco_plan_with_the_real_executor(tmp_path):
    from disco_zoo.runtime.disco_plan_executor import execute_disco_plan

    report = execute_disco_plan(str(_tiny_plan(tmp_path)), backend="gloo", emulate_links=True, repeats=1, warmup=0)
    assert report["bytes_measured"] == report["bytes_predicted"] > 0
    assert report["measured_latency_s"] > 0 and report["predicted_this_run_s"] > 0


def test_a_plan_for_another_partition_is_refused_before_any_rank_starts(tmp_path):
    from disco_zoo.runtime.disco_plan_executor import execute_disco_plan

    path = _tiny_plan(tmp_path)
    raw = json.loads(path.read_text())
    raw["partition_sha256"] = "0" * 64
    path.write_text(json.dumps(raw))
    with pytest.raises(DiscoZooError, match="made for another partition"):
        execute_disco_plan(str(path), backend="gloo")


def test_only_linked_devices_are_placed_together_and_a_missing_link_is_named():
    model = to_disco(_tiny(), 2).eval()
    facts = disco_facts(model, "tiny", SHAPE)
    devices = [{"name": "fast", "flops": 2e9}, {"name": "slow", "flops": 1e9}, {"name": "slowest", "flops": 2.5e8}]
    only = profile_from_dict({"devices": devices, "links": {"pairs": [
        {"between": ["slow", "slowest"], "bandwidth_bps": 1e8, "latency_s": 0.0}]}})
    assert sorted(place_disco(facts, only)[0].devices) == [1, 2]  # fast has no link to anyone
    small = [dict(d, memory_bytes=1024) if d["name"] != "fast" else d for d in devices]
    cut = profile_from_dict({"devices": small, "links": {"pairs": [
        {"between": ["slow", "slowest"], "bandwidth_bps": 1e8, "latency_s": 0.0}]}})
    with pytest.raises(DiscoZooError, match="no device .* has memory"):
        place_disco(facts, cut)
    apart = profile_from_dict({"devices": devices[:2], "links": {"pairs": [
        {"between": ["fast", "slow"], "bandwidth_bps": 1e8, "latency_s": 0.0}]}})
    assert apart.has_link(0, 1)
    lonely = profile_from_dict({"devices": devices, "links": {"pairs": [
        {"between": ["fast", "slow"], "bandwidth_bps": 1e8, "latency_s": 0.0}]}})
    with pytest.raises(DiscoZooError, match="no link between fast and slowest"):
        lonely.link(0, 2)
    no_mem = [dict(d, memory_bytes=1024) if d["name"] == "slow" else d for d in devices]
    gap = profile_from_dict({"devices": no_mem, "links": {"pairs": [
        {"between": ["fast", "slow"], "bandwidth_bps": 1e8, "latency_s": 0.0}]}})
    with pytest.raises(DiscoZooError, match="needs a link .* \\(fast-slowest"):
        place_disco(facts, gap)
