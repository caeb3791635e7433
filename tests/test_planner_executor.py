"""The EdgeFlow executor runs a plan's stored units across processes: logits equal the
single-process forward, bytes on the wire equal the plan's prediction, a plan with edited
units is refused, emulation is refused when it cannot be honest."""
from __future__ import annotations

import pytest
import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.planner import profile_from_dict
from disco_zoo.planner.report import build_graph, plan_and_compare
from disco_zoo.registry import build_model
from disco_zoo.runtime.edgeflow_executor import execute_plan
from disco_zoo.runtime.session import seeded_input

# slow devices on fast links: EdgeFlow splits layers across all of them
SLOW3 = {"name": "slow3", "devices": [{"name": "a", "flops": 1e8}, {"name": "b", "flops": 6e7},
                                      {"name": "c", "flops": 4e7}],
         "links": {"default": {"bandwidth_bps": 1e9, "latency_s": 1e-4}}}


def _check(model: str, devices: int, size: int, tmp_path) -> dict:
    raw = dict(SLOW3, devices=SLOW3["devices"][:devices])
    prof = profile_from_dict(raw)
    torch.manual_seed(0)
    graph = build_graph(model, size, 10)
    path = tmp_path / "plan.json"
    report = plan_and_compare(model, graph, prof, path, num_classes=10)
    assert all(v > 0 for v in report["rows_per_device"].values())  # every device has units
    run = execute_plan(str(path), stretch=False, timeout_s=120)
    torch.manual_seed(0)
    net = build_model(model, num_classes=10).eval()
    x = seeded_input((1, 3, size, size), 0)  # the session's input for seed 0, as DISCO runs get
    with torch.no_grad():
        want = net(x)
    assert run["output_rank"] == 0  # the output layer's device
    assert (torch.tensor(run["logits"]) - want).abs().max().item() <= 1e-4
    assert run["bytes_measured"] == run["bytes_predicted"] == report["edgeflow"]["bytes"] > 0
    return run


def test_mobilenet_v2_on_three_devices(tmp_path) -> None:
    _check("mobilenet_v2", 3, 32, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("model, devices", [("resnet50", 3), ("googlenet", 2), ("densenet121", 3)])
def test_models_across_devices(model: str, devices: int, tmp_path) -> None:
    _check(model, devices, 32, tmp_path)


def test_a_plan_with_edited_units_is_refused_before_any_rank_starts(tmp_path) -> None:
    import json

    raw = dict(SLOW3, devices=SLOW3["devices"][:2])
    path = tmp_path / "plan.json"
    plan_and_compare("mobilenet_v2", build_graph("mobilenet_v2", 32, 10), profile_from_dict(raw), path, num_classes=10)
    doc = json.loads(path.read_text())
    victim = next(u for u in doc["units"] if u["inputs"] and u["inputs"][0]["sources"])
    victim["inputs"][0]["rows"] = [victim["inputs"][0]["rows"][0], victim["inputs"][0]["rows"][1] + 1]
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match=f"plan units do not match .* layer '{victim['layer']}'"):
        execute_plan(str(path), stretch=False)


def test_mismatched_plan_and_unemulatable_profile(tmp_path) -> None:
    fast = dict(SLOW3, devices=[{"name": "a", "flops": 1e15}, {"name": "b", "flops": 1e8}])
    path = tmp_path / "plan.json"
    plan_and_compare("mobilenet_v2", build_graph("mobilenet_v2", 32, 10), profile_from_dict(fast), path,
                     num_classes=10)
    with pytest.raises(DiscoZooError, match="cannot emulate a .*faster than this host"):
        execute_plan(str(path), stretch=True)
    import json

    doc = json.loads(path.read_text())
    doc["input_shape"] = [1, 3, 64, 64]
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match="another model, input size"):
        execute_plan(str(path), stretch=False)


@pytest.mark.slow
def test_run_plan_command_stretches_to_the_prediction(tmp_path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from disco_zoo.commands import plan as plan_cmd

    app = typer.Typer()
    plan_cmd.register(app)
    prof = tmp_path / "slow3.json"
    prof.write_text(json.dumps(SLOW3))
    path = tmp_path / "plan.json"
    made = CliRunner().invoke(app, ["plan", "mobilenet_v2", "--devices", str(prof), "--input-size", "32",
                                    "--num-classes", "10", "--out", str(path), "--json"])
    assert made.exit_code == 0, made.output
    res = CliRunner().invoke(app, ["run-plan", str(path), "--json"])
    assert res.exit_code == 0, res.output
    run = json.loads(res.output)
    assert run["bytes_measured"] == run["bytes_predicted"]
    # unit compute is stretched to the profile, links are ideal: measured tracks the prediction
    assert 0.9 * run["predicted_this_run_s"] <= run["measured_latency_s"] <= 2.0 * run["predicted_this_run_s"] + 0.5


def test_emulated_pair_links_slow_the_run_by_their_own_latency(tmp_path) -> None:
    """With --emulate-links each device pair gets its profile's link: the same plan, run
    with a 150 ms override on a<->b, pays that latency; bytes still equal the prediction."""
    import json

    raw = dict(SLOW3, devices=SLOW3["devices"][:2])
    path = tmp_path / "plan.json"
    plan_and_compare("mobilenet_v2", build_graph("mobilenet_v2", 32, 10), profile_from_dict(raw), path, num_classes=10)
    fast = execute_plan(str(path), stretch=False, emulate_links=True, timeout_s=120)
    assert fast["bytes_measured"] == fast["bytes_predicted"] > 0  # the plan crosses the pair
    doc = json.loads(path.read_text())
    doc["profile"]["links"]["pairs"] = [{"between": ["a", "b"], "bandwidth_bps": 1e9, "latency_s": 0.15}]
    slow_path = tmp_path / "slow.json"
    slow_path.write_text(json.dumps(doc))
    slow = execute_plan(str(slow_path), stretch=False, emulate_links=True, timeout_s=120)
    assert slow["links_emulated"] and slow["bytes_measured"] == slow["bytes_predicted"]
    assert slow["measured_latency_s"] >= fast["measured_latency_s"] + 0.14


def test_run_plan_warns_when_the_host_is_slower_than_its_devices(capsys):
    """A unit the host computes slower than its device cannot be stretched back: run-plan
    says so (with a larger --slowdown to try) instead of blaming the plan's prediction."""
    from disco_zoo.commands.plan import _warn_overrun

    report = {"predicted_this_run_s": 0.1, "per_rank": [{"overrun_s": 0.001}, {"overrun_s": 0.002}]}
    _warn_overrun(report, slowdown=4)
    assert capsys.readouterr().err == ""
    report["per_rank"][1]["overrun_s"] = 0.03
    _warn_overrun(report, slowdown=4)
    err = capsys.readouterr().err
    assert "30.0 ms slower" in err and "--slowdown (e.g. 8)" in err
    _warn_overrun({"predicted_this_run_s": 0.1, "overrun_s": 0.02}, slowdown=1)  # a DISCO plan's report
    assert "--slowdown (e.g. 2)" in capsys.readouterr().err
