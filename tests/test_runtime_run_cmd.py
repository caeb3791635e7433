"""``disco-zoo run`` on a local typer app (the lead wires it into cli.py)."""
import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from disco_zoo.commands import run as run_cmd
from disco_zoo.errors import DiscoZooError


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    run_cmd.register(app)

    @app.callback()
    def main() -> None:  # keeps "run" a sub-command
        pass

    return app


def test_run_json_reports_every_rank(app):
    result = CliRunner().invoke(
        app, ["run", "resnet18", "--untrained", "--nodes", "2", "--input-size", "32", "--backend", "mpi", "--wire-dtype", "fp16",
              "--json"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(result.output)
    assert report["nodes"] == 2 and "UNTRAINED" in report["weights"]
    assert [r["rank"] for r in report["ranks"]] == [0, 1]
    assert all(r["time_s"] > 0 and r["peak_rss_mib"] > 0 and r["bytes_sent"] > 0 for r in report["ranks"])
    assert report["bytes_total"] == sum(report["bytes_per_pair"].values()) == sum(r["bytes_sent"] for r in report["ranks"])
    assert len(report["top5"]) == 5


def test_run_table_with_image_and_emulated_link(app, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)).save(image)
    result = CliRunner().invoke(
        app, ["run", "resnet18", "--input", str(image), "--input-size", "32", "--bandwidth", "100mbit", "--latency", "2ms",
              "--backend", "gloo"],
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "link 100 Mbit/s, 2 ms" in result.output and "digit.png" in result.output
    assert "peak RSS MiB" in result.output and "bytes per inference" in result.output


def test_run_rejects_bad_link_and_input_combinations(app, tmp_path):
    result = CliRunner().invoke(app, ["run", "resnet18", "--bandwidth", "fast"])
    assert isinstance(result.exception, DiscoZooError) and "bad bandwidth 'fast'" in str(result.exception)
    result = CliRunner().invoke(app, ["run", "resnet18", "--random", "--input", str(tmp_path / "x.png")])
    assert isinstance(result.exception, DiscoZooError) and "not both" in str(result.exception)
