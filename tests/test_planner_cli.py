"""Plans as data, plan/model mismatch errors, and the plan/profile commands."""
from __future__ import annotations

import json

import pytest
import typer
from torch import nn
from typer.testing import CliRunner

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import trace_model
from disco_zoo.planner import plan_edgeflow, simulate
from disco_zoo.planner.plan_io import Plan, check_plan, load_plan, save_plan
from disco_zoo.planner.units import build_units

from helpers import Branchy, three_devices


def test_plan_round_trip_and_mismatch(tmp_path) -> None:
    g = trace_model(Branchy(), (1, 3, 32, 32))
    prof = three_devices()
    placement, _ = plan_edgeflow(g, prof)
    path = tmp_path / "plan.json"
    save_plan(Plan("branchy", g.input_shape, prof, placement, {"latency_s": 1.0}), g, path)
    plan, raw = load_plan(path)
    check_plan(plan, g)
    assert plan.placement == placement and plan.profile.to_dict() == prof.to_dict()
    assert simulate(g, plan.placement, plan.profile).latency_s == simulate(g, placement, prof).latency_s
    unit = next(u for u in raw["units"] if u["forward"])
    assert {"layer", "device", "rows", "inputs", "forward"} <= set(unit)
    assert plan.units == build_units(g, placement)  # the stored units, loaded as Unit objects
    with pytest.raises(DiscoZooError, match="input size"):
        check_plan(plan, trace_model(Branchy(), (1, 3, 16, 16)))
    with pytest.raises(DiscoZooError, match="does not match model"):
        check_plan(plan, trace_model(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 3, 32, 32)))
    (tmp_path / "junk.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DiscoZooError, match="not an EdgeFlow plan"):
        load_plan(tmp_path / "junk.json")


def test_a_plan_whose_units_were_edited_is_refused(tmp_path) -> None:
    g = trace_model(Branchy(), (1, 3, 32, 32))
    prof = three_devices()
    placement, _ = plan_edgeflow(g, prof)
    path = tmp_path / "plan.json"
    save_plan(Plan("branchy", g.input_shape, prof, placement), g, path)
    check_plan(load_plan(path)[0], g)  # intact: accepted
    doc = json.loads(path.read_text())
    victim = next(u for u in doc["units"] if any(f["device"] != u["device"] for f in u["forward"]))
    hop = next(f for f in victim["forward"] if f["device"] != victim["device"])
    hop["bytes"] += 4  # one forwarding-table entry now sends a row more than planned
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match=f"unit of layer '{victim['layer']}' on device {victim['device']}"):
        check_plan(load_plan(path)[0], g)
    doc["units"] = [u for u in doc["units"] if u is not victim]
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match="is missing"):
        check_plan(load_plan(path)[0], g)


def _app() -> typer.Typer:
    from disco_zoo.commands import plan, profile

    app = typer.Typer()
    plan.register(app)
    profile.register(app)
    return app


def test_plan_command(tmp_path) -> None:
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    res = CliRunner().invoke(_app(), ["plan", "mobilenet_v2", "--devices", "four-mixed-ethernet",
                                      "--input-size", "32", "--out", str(out), "--gantt", str(png), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert set(report["baselines"]) == {"single-fastest", "equal-split", "proportional-split", "layer-wise"}
    assert report["edgeflow"]["latency_s"] > 0
    assert json.loads(out.read_text())["model"] == "mobilenet_v2"
    assert png.stat().st_size > 1000
    table = CliRunner().invoke(_app(), ["plan", "mobilenet_v2", "--devices", "four-mixed-ethernet",
                                        "--input-size", "32"])
    assert table.exit_code == 0 and "layer-wise" in table.output and "edgeflow" in table.output


def test_plan_command_bad_profile(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"devices": [{"name": "x"}], "links": {}}))
    res = CliRunner().invoke(_app(), ["plan", "mobilenet_v2", "--devices", str(bad), "--input-size", "32"])
    assert res.exit_code != 0 and isinstance(res.exception, DiscoZooError)
    assert "missing 'flops'" in str(res.exception)


def test_profile_command_writes_a_valid_device(tmp_path) -> None:
    out = tmp_path / "mine.json"
    res = CliRunner().invoke(_app(), ["profile", "--name", "host", "--out", str(out), "--repeats", "1",
                                      "--memory-bytes", "1000000000"])
    assert res.exit_code == 0, res.output
    from disco_zoo.planner import load_profile

    dev = load_profile(out).devices[0]
    assert dev.name == "host" and dev.flops > 1e8 and "linear" in dev.flops_by_op
    again = CliRunner().invoke(_app(), ["profile", "--name", "host", "--out", str(out), "--repeats", "1"])
    assert isinstance(again.exception, DiscoZooError)
