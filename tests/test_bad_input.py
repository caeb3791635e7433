"""Bad input at the command line: one error line, exit status 2, quickly, before any rank
starts, and nothing left behind (issue 17, items 6, 8, 9 and 10)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import processes_mentioning, write_image_folder

SCRIPT = str(Path(sys.executable).parent / "disco-zoo")
REPO = Path(__file__).resolve().parent.parent
PRESET = REPO / "disco_zoo" / "planner" / "presets" / "wifi-pi4-nano-phone.json"
FAIL_FAST_S = 30.0  # start-up (torch import) included; no case may reach a launch


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the console script with a temp folder of its own: afterwards that folder must
    be empty (no run directory left) and no process may name it (no rank left)."""
    scratch = Path(tempfile.mkdtemp(prefix="bad-input-"))
    try:
        start = time.monotonic()
        out = subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "COLUMNS": "80", "TMPDIR": str(scratch)})
        elapsed = time.monotonic() - start
        left = sorted(p.name for p in scratch.glob("disco-zoo-*"))  # torch's own caches may appear; ours may not
        assert left == [], f"left behind: {left}"
        assert processes_mentioning(str(scratch)) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out, elapsed


def assert_one_clear_line(out: subprocess.CompletedProcess, elapsed: float, *fragments: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert elapsed < FAIL_FAST_S, elapsed


def _shard_folder_with(tmp_path: Path, change) -> Path:
    folder = tmp_path / "resnet18_disco_2node.digits"
    shutil.copytree(REPO / "hub" / "resnet18_disco_2node.digits", folder)
    config = folder / "config.json"
    config.write_text(change(json.loads(config.read_text())))
    return folder


@pytest.mark.parametrize("change, fragment", [
    (lambda c: "{not json", "not JSON"),
    (lambda c: "{}", "lacks the field 'arch'"),
    (lambda c: "[]", "JSON object, got list"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "nodes"}), "lacks the field 'nodes'"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "partition"}), "lacks the field 'partition'"),
    (lambda c: json.dumps({k: v for k, v in c.items() if k != "arch"}), "lacks the field 'arch'"),
    (lambda c: json.dumps({**c, "partition": {**c["partition"], "layers": "x"}}), "partition"),
])
def test_run_on_a_folder_with_a_broken_config(tmp_path, change, fragment):
    folder = _shard_folder_with(tmp_path, change)
    out, elapsed = run_cli("run", str(folder), "--timeout", "20")
    assert_one_clear_line(out, elapsed, "config.json", fragment)


def test_run_without_published_weights_needs_the_untrained_flag():
    out, elapsed = run_cli("run", "resnet34", "--nodes", "2")
    assert_one_clear_line(out, elapsed, "no pretrained weights")


def test_run_with_more_nodes_than_the_model_is_split_for():
    out, elapsed = run_cli("run", "resnet18-disco-2node", "--nodes", "4")
    assert_one_clear_line(out, elapsed, "split over 2 nodes", "--nodes 2")


@pytest.mark.parametrize("args, fragment", [
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--timeout", "-1"], "--timeout must be a positive number"),
    (["--timeout", "nan"], "--timeout must be a positive number"),
    (["--bandwidth", "1e400mbit"], "positive finite rate"),
    (["--latency", "soon"], "bad latency"),
])
def test_run_refuses_bad_numbers(args, fragment):
    out, elapsed = run_cli("run", "resnet18-disco-2node", *args)
    assert_one_clear_line(out, elapsed, fragment)


def test_eval_checks_every_option_before_it_starts():
    out, elapsed = run_cli("eval", "resnet18-disco-2node", "--bandwidth", "10mbit,fast")
    assert_one_clear_line(out, elapsed, "--bandwidth", "'fast'")
    out, elapsed = run_cli("eval", "resnet18-disco-2node", "--out", "/proc/no/result.json")
    assert_one_clear_line(out, elapsed, "--out", "not a writable folder")
    out, elapsed = run_cli("eval", "resnet18-disco-2node", "--timeout", "nan")
    assert_one_clear_line(out, elapsed, "--timeout")


def test_eval_on_an_image_folder_with_other_classes(tmp_path):
    write_image_folder(tmp_path / "data" / "val", classes=("cat", "dog"))
    out, elapsed = run_cli("eval", "resnet18-disco-2node", "--data", str(tmp_path / "data"), "--no-latency")
    assert_one_clear_line(out, elapsed, "classes do not match")


def test_eval_on_a_folder_with_a_corrupt_png(tmp_path):
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.tasks import get_task
    from disco_zoo.hub import get_pretrained_cfg

    root = write_image_folder(tmp_path / "data" / "val", classes=tuple(str(i) for i in range(10)), per_class=1)
    (root / "3" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    config = get_pretrained_cfg("resnet18_disco_2node.digits")
    with pytest.raises(DiscoZooError, match=r"3/0\.png is not a readable image"):
        get_task(config.task).eval_split(str(tmp_path / "data"), config)


def test_plan_refuses_a_binary_profile_and_a_misspelt_field(tmp_path):
    binary = tmp_path / "profile.json"
    binary.write_bytes(bytes(range(256)) * 8)
    out, elapsed = run_cli("plan", "resnet18", "--devices", str(binary))
    assert_one_clear_line(out, elapsed, "not a JSON device profile")
    doc = json.loads(PRESET.read_text())
    doc["devices"][0]["memmory_bytes"] = doc["devices"][0].pop("memory_bytes", 1e9)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(doc))
    out, elapsed = run_cli("plan", "resnet18", "--devices", str(typo))
    assert_one_clear_line(out, elapsed, "unknown field 'memmory_bytes'", "did you mean 'memory_bytes'")
