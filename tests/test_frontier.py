"""The traffic-frontier collector: a tiny DISCO folder and its dense counterpart in
tmp_path, the table's numbers checked against the in-memory model they were saved from."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_VIT, sparse_disco_folder

from disco_zoo.data.digits import digits_dataset
from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.frontier import frontier_point, frontier_table
from disco_zoo.registry import build_model
from disco_zoo.weights import save_dense

ARCH, ARGS = TINY_VIT
DIGITS = {"dataset": "digits", "input_size": [3, 32, 32], "class_names": [str(i) for i in range(10)],
          "mean": [0.3053] * 3, "std": [0.376] * 3}
TOOL = Path(__file__).resolve().parents[1] / "tools" / "frontier_table.py"


def _update_config(folder: Path, **fields) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(dense folder, its model, DISCO folder at budget 0.1, its model), models in memory."""
    root = tmp_path_factory.mktemp("frontier")
    torch.manual_seed(1)
    dense = build_model(ARCH, **ARGS, num_classes=10).eval()
    dense_folder = save_dense(dense, root / f"{ARCH}.digits", {"arch": ARCH, "args": {**ARGS, "num_classes": 10},
                                                               **DIGITS})
    disco_folder, model, _ = sparse_disco_folder(root, 2, arch=ARCH, args=ARGS)
    _update_config(disco_folder, dense=f"{ARCH}.digits", sparsify={"traffic": 0.1}, **DIGITS)
    return dense_folder, dense, disco_folder, model


def _top1(model, size=32) -> float:
    images, labels = digits_dataset("test", size=size).tensors
    with torch.no_grad():
        return (model.eval()(images).argmax(1) == labels).float().mean().item()


def test_a_point_is_measured_from_the_folder(folders):
    _, _, disco_folder, model = folders
    point = frontier_point(disco_folder)
    acc = disco_accounting(model, (1, 3, 32, 32))
    assert point.budget == 0.1
    assert point.traffic_ratio == pytest.approx(acc.traffic_ratio) and 0 < point.traffic_ratio < 1
    assert point.flops_ratio == pytest.approx(acc.flops_total / acc.flops_dense) and point.flops_ratio < 1
    assert point.max_node_params_ratio == pytest.approx(max(acc.params_per_node) / acc.params_dense)
    assert point.top1 == pytest.approx(_top1(model), abs=1e-6)
    assert point.folder == str(disco_folder)


def test_the_tool_writes_the_table_schema(folders, tmp_path):
    dense_folder, dense, disco_folder, model = folders
    spec = importlib.util.spec_from_file_location("frontier_table_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "frontier" / f"{ARCH}.json"
    assert tool.main(["--dense", str(dense_folder), "--out", str(out), str(disco_folder)]) == 0
    table = json.loads(out.read_text())
    assert list(table) == ["arch", "dense_model", "dense_top1", "n_test", "points"]
    assert table["arch"] == ARCH and table["dense_model"] == f"{ARCH}.digits" and table["n_test"] == 270
    assert table["dense_top1"] == pytest.approx(_top1(dense), abs=1e-6)
    [point] = table["points"]
    assert list(point) == ["budget", "traffic_ratio", "top1", "flops_ratio", "max_node_params_ratio", "folder"]
    assert point["budget"] == 0.1 and point["top1"] == pytest.approx(_top1(model), abs=1e-6)


def test_bad_folders_are_refused_in_one_line(folders, tmp_path):
    dense_folder, _, disco_folder, _ = folders
    with pytest.raises(DiscoZooError, match="share a budget"):
        frontier_table(dense_folder, [disco_folder, disco_folder])
    with pytest.raises(DiscoZooError, match="a frontier point is a DISCO folder"):
        frontier_point(dense_folder)
    with pytest.raises(DiscoZooError, match="no sparsified folders"):
        frontier_table(dense_folder, [])
    other = tmp_path / "other"
    other.mkdir()
    for item in disco_folder.iterdir():
        (other / item.name).write_bytes(item.read_bytes())
    _update_config(other, dense="resnet18.digits")
    with pytest.raises(DiscoZooError, match="sparsified from 'resnet18.digits'"):
        frontier_table(dense_folder, [other])


REPO = Path(__file__).resolve().parents[1]
TABLES = sorted((REPO / "eval" / "frontier").glob("*.json"))
FIELDS = ["budget", "traffic_ratio", "top1", "flops_ratio", "max_node_params_ratio", "folder"]


@pytest.mark.parametrize("path", TABLES, ids=[p.stem for p in TABLES])
def test_recorded_frontiers_agree_with_the_hub_folders_they_name(path):
    """A stale table (a hub folder re-sparsified, a dense model retrained) fails here."""
    table = json.loads(path.read_text())
    assert list(table) == ["arch", "dense_model", "dense_top1", "n_test", "points"] and path.stem == table["arch"]
    dense = json.loads((REPO / "hub" / table["dense_model"] / "config.json").read_text())
    assert table["dense_top1"] == pytest.approx(dense["metrics"]["test_top1"], abs=1e-6)
    budgets = [p["budget"] for p in table["points"]]
    assert budgets == sorted(budgets, reverse=True) and len(set(budgets)) == len(budgets)
    published = [p for p in table["points"] if p["folder"].startswith("hub/")]
    assert published, "the published budget's point at least"
    for point in published:
        assert list(point) == FIELDS
        config = json.loads((REPO / point["folder"] / "config.json").read_text())
        assert config["arch"] == table["arch"] and config["dense"] == table["dense_model"]
        assert point["budget"] == config["sparsify"]["traffic"]
        assert point["traffic_ratio"] == pytest.approx(config["accounting"]["traffic_ratio"])
        assert point["top1"] == pytest.approx(config["metrics"]["test_top1"], abs=1e-6)


def test_published_frontier_variants_meet_the_target():
    """Each hub folder tagged ``<data>_t<percent>`` is a recorded frontier point with >= 10x
    less traffic than dense within-layer parallelism within 1 point of dense top-1 (issue 18)."""
    points = {p["folder"]: (json.loads(t.read_text()), p) for t in TABLES for p in json.loads(t.read_text())["points"]}
    variants = [f"hub/{p.name}" for p in (REPO / "hub").iterdir() if "_t" in p.name.partition(".")[2]]
    for folder in variants:
        assert folder in points, f"{folder} is published but in no eval/frontier table: run eval/frontier.sh --collect"
        table, point = points[folder]
        assert point["traffic_ratio"] <= 0.1 and point["top1"] >= table["dense_top1"] - 0.01, folder
