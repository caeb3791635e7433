"""The cards' figures: the data each plot draws equals the model's numbers, and the PNGs exist."""
import json

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.break_even import predicted_ms
from disco_zoo.harness.intervals import wilson_interval
from disco_zoo.harness.report import EvalReport
from disco_zoo.model_cards import RESULTS_DIR
from disco_zoo.plots import (
    PLOTS_DIR, latency_curves, latency_plot_name, plot_frontier, plot_latency, read_frontier, write_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODEL = "resnet50_disco_2node.digits"


@pytest.fixture(scope="module")
def report():
    return EvalReport.read(RESULTS_DIR / f"{MODEL}.json")


def _frontier_doc(n=270):
    return {"arch": "resnet50_disco_2node", "dense_model": "resnet50.digits", "dense_top1": 262 / n, "n_test": n,
            "points": [{"budget": b, "traffic_ratio": t, "top1": k / n, "flops_ratio": 0.3, "max_node_params_ratio": 0.5,
                        "folder": f"hub/resnet50_disco_2node.b{b}"}
                       for b, t, k in ((0.1, 0.09, 261), (0.3, 0.28, 263), (0.05, 0.045, 250))]}


def test_latency_curves_are_the_cost_models_and_the_measured_points(report):
    lat = report.latency_paper_size
    curves = latency_curves(lat, points=9)
    assert curves.bandwidth_bps[0] == pytest.approx(1e6) and curves.bandwidth_bps[-1] == pytest.approx(1e10)
    for bps, disco, tp in zip(curves.bandwidth_bps, curves.disco_ms, curves.dense_tp_ms):
        assert disco == predicted_ms(lat, "disco", bps) and tp == predicted_ms(lat, "dense_tp", bps)
    assert all(a >= b for a, b in zip(curves.disco_ms, curves.disco_ms[1:]))  # never slower on a faster link
    assert [(m.bandwidth_bps, m.disco_ms, m.dense_tp_ms) for m in curves.measured] == [
        (link.bandwidth_bps, link.disco_ms, link.dense_tp_ms) for link in lat.links]
    assert curves.dense_single_ms == lat.dense_single_ms
    assert curves.break_even_bps == lat.break_even.bandwidth_bps


def test_latency_plot_is_a_small_png(report, tmp_path):
    path = plot_latency(report, tmp_path / "lat.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and 10_000 < len(data) < 150_000
    assert [p.name for p in tmp_path.iterdir()] == ["lat.png"]  # written atomically, nothing left beside it


def test_every_published_result_has_its_committed_plot():
    for path in sorted(RESULTS_DIR.glob("*.json")):
        report = EvalReport.read(path)
        png = PLOTS_DIR / latency_plot_name(report.model)
        if report.latency is None:  # recorded with --no-latency: nothing to draw, and no stale figure left
            assert not png.exists(), png
            continue
        assert png.read_bytes().startswith(PNG_MAGIC), png


def test_frontier_data_and_plot(tmp_path):
    path = tmp_path / "resnet50_disco_2node.json"
    path.write_text(json.dumps(_frontier_doc()))
    frontier = read_frontier(path)
    assert [p.budget for p in frontier.points] == [0.3, 0.1, 0.05]  # most traffic first
    top = frontier.points[0]
    assert (top.top1, (top.top1_low, top.top1_high)) == (263 / 270, wilson_interval(263, 270))
    assert frontier.dense_top1 == 262 / 270 and frontier.n_test == 270
    png = plot_frontier(frontier, tmp_path / "f.png")
    assert png.read_bytes().startswith(PNG_MAGIC) and len(png.read_bytes()) < 150_000


def test_frontier_file_off_the_schema_is_a_clear_error(tmp_path):
    doc = _frontier_doc()
    del doc["points"][1]["traffic_ratio"]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DiscoZooError, match=r"points\[1\] lacks the keys \['traffic_ratio'\]"):
        read_frontier(path)
    path.write_text("{")
    with pytest.raises(DiscoZooError, match="not a readable frontier file"):
        read_frontier(path)


def test_write_plots_skips_what_it_has_no_data_for(report, tmp_path):
    said = []
    schema_1 = EvalReport.from_dict({**report.to_dict(), "latency": {
        k: v for k, v in report.latency.to_dict().items() if k not in ("programs", "break_even")}})
    written = write_plots({MODEL: schema_1}, tmp_path / "plots", tmp_path / "no-frontier", say=said.append)
    assert written == []
    assert any("records no programs" in s for s in said) and any("no " in s and "frontier" in s for s in said)
    (tmp_path / "frontier").mkdir()
    (tmp_path / "frontier" / "a.json").write_text(json.dumps(_frontier_doc()))
    written = write_plots({}, tmp_path / "plots", tmp_path / "frontier")
    assert [p.name for p in written] == ["resnet50_disco_2node.frontier.png"]


def test_plots_is_a_command():
    from typer.testing import CliRunner

    from disco_zoo.cli import app

    result = CliRunner().invoke(app, ["plots", "--help"])
    assert result.exit_code == 0 and "eval/plots" in result.output
