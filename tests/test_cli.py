"""The console script as a user runs it: fast help/list, clear errors, info JSON."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = str(Path(sys.executable).parent / "disco-zoo")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "resnet*"]])
def test_help_and_list_do_not_import_torch(args):
    code = (
        "import sys; sys.argv = ['disco-zoo', *sys.argv[1:]]\n"
        "from disco_zoo.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "TORCH False" in out.stdout


def test_list_shows_models():
    result = run_cli("list", "resnet*")
    assert result.returncode == 0
    assert "resnet50" in result.stdout and "googlenet" not in result.stdout


def test_unknown_model_is_one_clear_line_not_a_traceback():
    result = run_cli("info", "resnet-05")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "unknown model 'resnet-05'" in result.stderr and "resnet50" in result.stderr


def test_info_json_for_resnet18():
    result = run_cli("info", "resnet18", "--nodes", "2", "--input-size", "32", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["params"] == 11_689_512
    assert doc["flops"] > 0 and doc["dense_tp_bytes"] > 0
    assert sum(layer["dense_tp_bytes"] for layer in doc["layers"]) == doc["dense_tp_bytes"]
    assert len([layer for layer in doc["layers"] if layer["op"] in ("conv", "linear")]) == 21


def test_info_table_prints_totals():
    result = run_cli("info", "resnet18", "--input-size", "32", "--dtype", "fp16")
    assert result.returncode == 0, result.stderr
    assert "params 11,689,512" in result.stdout
    assert "fp16" in result.stdout
