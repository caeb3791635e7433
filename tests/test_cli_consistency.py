"""One meaning per option across the CLI (issue 18): ``--json`` prints the document on
stdout, ``--out`` writes a file, progress reaches a log, ``--nodes`` agrees with the
model, and a published folder is never replaced without ``--force``."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from disco_zoo import hub
from disco_zoo.commands.info import model_report
from disco_zoo.commands.options import check_not_published
from disco_zoo.errors import DiscoZooError
from disco_zoo.progress import status
from disco_zoo.train import TrainConfig, fit

SCRIPT = str(Path(sys.executable).parent / "disco-zoo")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The console script with stdout and stderr captured: neither is a terminal, as in a log."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_list_json_is_a_document_on_stdout_without_torch():
    code = ("import sys; sys.argv = ['disco-zoo', 'list', '--pretrained', '--json']\n"
            "from disco_zoo.cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rows = json.loads(out.stdout)
    assert "TORCH False" in out.stderr
    assert {r["name"] for r in rows} == set(hub.list_pretrained())
    assert all(set(r) == {"name", "family", "task", "source", "tags"} for r in rows)


@pytest.mark.slow
def test_eval_json_goes_to_stdout_out_to_a_file_and_progress_to_the_log(tmp_path):
    result = tmp_path / "result.json"
    out = run_cli("eval", "resnet18-disco-2node", "--no-latency", "--paper-size", "0", "--json", "--out", str(result))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == json.loads(result.read_text())  # stdout holds the document and nothing else
    lines = out.stderr.splitlines()  # not a terminal: plain progress lines, one per step, beside the document
    assert any("distributed inference over 270 inputs" in line for line in lines), out.stderr
    assert len(lines) >= 4 and all(line.startswith("[") for line in lines)
    table = run_cli("eval", "resnet18-disco-2node", "--no-latency", "--paper-size", "0")
    assert table.returncode == 0 and table.stderr == ""  # without --json progress goes with the table
    assert "distributed inference over 270 inputs" in table.stdout and "top-1" in table.stdout


@pytest.mark.parametrize("stderr", [False, True])
def test_status_writes_plain_lines_when_not_on_a_terminal(capsys, stderr):
    with status("working", stderr=stderr) as update:
        update("step two")
    captured = capsys.readouterr()
    lines = (captured.err if stderr else captured.out).splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == ["working", "step two", "done"]
    assert (captured.out if stderr else captured.err) == ""


def test_training_logs_each_epoch_when_not_on_a_terminal(capsys):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    fit(model, batches, TrainConfig(epochs=2, lr=1e-2, seed=0), description="train tiny")
    out = capsys.readouterr().out
    assert "train tiny: epoch 1/2 loss" in out and "train tiny: epoch 2/2 loss" in out


def test_info_honours_the_tag_input_size_and_classes():
    report = model_report("resnet50.digits", None, None, "fp32")
    config = hub.get_pretrained_cfg("resnet50.digits")
    assert report["model"] == "resnet50.digits"
    assert (report["input_size"], report["num_classes"]) == (config.input_size[-1], config.num_classes) == (32, 10)


@pytest.mark.parametrize("args", [
    ["info", "resnet18-disco-2node", "--nodes", "4"],
    ["run", "resnet18-disco-2node", "--nodes", "4"],
    ["sparsify", "resnet18_disco_2node", "--nodes", "4", "--out", "/tmp/never-written"],
])
def test_nodes_must_match_the_model_everywhere(args):
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert "is split over 2 nodes; drop --nodes or pass --nodes 2" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not Path("/tmp/never-written").exists()


@pytest.fixture
def store(tmp_path):
    """A $DISCO_ZOO_HUB holding a copy of a published folder."""
    root = tmp_path / "store"
    shutil.copytree(hub.REPO_HUB / "resnet18.digits", root / "resnet18.digits")
    return root


@pytest.mark.parametrize("args", [
    ["train", "resnet18", "--epochs", "1"],  # the default folder: $DISCO_ZOO_HUB/resnet18.digits
    ["train", "resnet18", "--epochs", "1", "--out", "{store}/resnet18.digits"],
    ["sparsify", "resnet18", "--out", "{store}/resnet18.digits"],
])
def test_train_and_sparsify_never_replace_a_published_folder_without_force(store, args):
    before = {p.name: p.read_bytes() for p in (store / "resnet18.digits").iterdir()}
    out = run_cli(*[a.format(store=store) for a in args], env={hub.HUB_ENV: str(store)})
    assert out.returncode == 2, out.stderr
    assert "is a published model folder; pass --force" in out.stderr
    assert {p.name: p.read_bytes() for p in (store / "resnet18.digits").iterdir()} == before  # card included


def test_the_clone_hub_is_published_and_force_allows_it(store, monkeypatch, tmp_path):
    monkeypatch.delenv(hub.HUB_ENV, raising=False)
    with pytest.raises(DiscoZooError, match="published model folder"):
        check_not_published(hub.REPO_HUB / "resnet50.digits", force=False)
    assert check_not_published(hub.REPO_HUB / "resnet50.digits", force=True) == hub.REPO_HUB / "resnet50.digits"
    assert check_not_published(tmp_path / "mine" / "resnet50.digits", force=False)  # elsewhere: fine
    monkeypatch.setenv(hub.HUB_ENV, str(store))
    assert hub.default_store() == store
    with pytest.raises(DiscoZooError, match="--force"):
        check_not_published(store / "resnet18.digits", force=False)
