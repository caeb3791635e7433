"""Weight storage (fp32 / fp16 / int8) and ``disco-zoo store``: what a folder holds is
what loads back, int8 is per output channel and exact where it can be, the accounting
counts the bytes a shard really takes, and re-storing a folder re-measures its metrics."""
import json

import pytest
import timm
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from disco_zoo.cli import app
from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.disco.shards import (load_disco_model, node_state_dict, read_node_shard, save_shards,
                                    shard_rounded_state)
from disco_zoo.errors import DiscoZooError
from disco_zoo.hub import load_folder
from disco_zoo.weight_storage import (INT8_SCALE_SUFFIX, compute_tensors, storage_rounded, stored_bytes,
                                      stored_tensors)
from disco_zoo.weights import DENSE_FILE, save_dense

from helpers import sparse_disco_folder


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def test_int8_is_per_output_channel_and_within_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3) * torch.tensor([1e-3, 1e-2, 0.1, 1.0, 10.0, 0.0]).view(-1, 1, 1, 1)
    stored = stored_tensors("w", weight, "int8")
    q, scale = stored["w"], stored["w" + INT8_SCALE_SUFFIX]
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (6,)
    assert q.abs().amax(dim=(1, 2, 3))[:5].eq(127).all()  # every channel uses its whole range
    back = compute_tensors(stored)["w"]
    assert back.dtype == torch.float32
    step = scale.view(-1, 1, 1, 1)
    assert ((back - weight).abs() <= step / 2 + 1e-12).all()
    assert back[5].eq(0).all()  # an all-zero channel stays exactly zero
    assert torch.equal(storage_rounded(weight, "int8"), back)
    for empty in (torch.zeros(4, 0, 3, 3), torch.zeros(0, 8, 1, 1)):  # a node's slice with no channels left
        assert storage_rounded(empty, "int8").shape == empty.shape and stored_bytes(empty, "int8") == 4 * empty.shape[0]


def test_vectors_are_never_rounded_and_bytes_shrink_with_the_dtype():
    vector = torch.randn(64) * 1e-6
    for storage in ("fp16", "int8"):
        assert torch.equal(stored_tensors("v", vector, storage)["v"], vector)
    matrix = torch.randn(64, 32)
    assert stored_bytes(matrix, "fp32") == 64 * 32 * 4
    assert stored_bytes(matrix, "fp16") == 64 * 32 * 2
    assert stored_bytes(matrix, "int8") == 64 * 32 + 64 * 4


def test_damaged_int8_tensors_and_unknown_dtypes_are_refused(tmp_path):
    stored = stored_tensors("w", torch.randn(4, 8), "int8")
    with pytest.raises(DiscoZooError, match="scale"):
        compute_tensors({"w": stored["w"], "w" + INT8_SCALE_SUFFIX: torch.ones(3)})
    with pytest.raises(DiscoZooError, match="damaged"):
        compute_tensors({"w" + INT8_SCALE_SUFFIX: torch.ones(4)})
    with pytest.raises(DiscoZooError, match="must be one of fp32, fp16, int8"):
        save_dense(torch.nn.Linear(2, 2), tmp_path / "m", {}, storage="int4")
    assert not (tmp_path / "m").exists()


def test_an_int8_dense_folder_loads_what_was_stored(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    folder = save_dense(model, tmp_path / "resnet18.digits", {"arch": "resnet18", "args": {"num_classes": 10}},
                        storage="int8")
    with safe_open(str(folder / DENSE_FILE), framework="pt") as handle:
        dtypes = {name: handle.get_tensor(name).dtype for name in handle.keys()}
    assert dtypes["conv1.weight"] == torch.int8 and dtypes["bn1.running_var"] == torch.float32
    assert json.loads((folder / "config.json").read_text())["storage_dtype"] == "int8"
    loaded = load_folder(folder)
    for name, tensor in model.state_dict().items():
        expected = storage_rounded(tensor, "int8") if tensor.is_floating_point() else tensor
        assert torch.equal(loaded.state_dict()[name], expected), name


def test_int8_shards_load_back_and_the_accounting_counts_their_bytes(tmp_path):
    folder, model, part = sparse_disco_folder(tmp_path, 2)
    int8 = save_shards(model, tmp_path / "int8", extra={"arch": "resnet18", "args": {"num_classes": 10}},
                       storage="int8")
    state = model.state_dict()
    for k in range(2):
        _, config, tensors = read_node_shard(int8, k)
        assert config.storage_dtype == "int8"
        assert all(t.dtype != torch.int8 for t in tensors.values())
        own = node_state_dict(state, part, k)
        assert set(tensors) == set(own)
        for name, tensor in own.items():
            expected = storage_rounded(tensor, "int8") if tensor.is_floating_point() else tensor
            assert torch.equal(tensors[name], expected), name
    # what the metrics of an int8 DISCO model are measured on is what its shards load back
    # (per output channel of each node's slice: not the whole tensor's rounding)
    loaded = load_disco_model(int8).state_dict()
    rounded = shard_rounded_state(model, "int8")
    assert set(rounded) == set(loaded) and all(torch.equal(rounded[n], loaded[n]) for n in loaded)
    whole = {n: storage_rounded(t, "int8") for n, t in state.items() if t.is_floating_point() and t.dim() >= 2}
    assert any(not torch.equal(whole[n], loaded[n]) for n in whole if n in part.tensors or n.endswith(".weight"))
    shape = (1, 3, 32, 32)
    fp32, fp16, q8 = (disco_accounting(model, shape, storage_dtype=s).params_bytes_per_node
                      for s in ("fp32", "fp16", "int8"))
    params = {name for name, _ in model.named_parameters()}
    for k in range(2):
        assert q8[k] == sum(stored_bytes(t, "int8") for n, t in node_state_dict(state, part, k).items() if n in params)
        assert q8[k] < fp16[k] < fp32[k]


def test_store_rounds_a_folder_and_records_what_users_load(tmp_path):
    folder = tmp_path / "resnet18.digits"
    trained = cli("train", "resnet18", "--data", "digits", "--epochs", "1", "--input-size", "16",
                  "--batch-size", "32", "--storage", "fp32", "--out", str(folder))
    assert trained.exit_code == 0, trained.output
    before = json.loads((folder / "config.json").read_text())
    original = load_folder(folder)

    result = cli("store", str(folder), "--storage", "int8")
    assert result.exit_code == 0, result.output
    after = json.loads((folder / "config.json").read_text())
    assert after["storage_dtype"] == "int8" and after["kind"] == "dense"
    assert after["recipe"] == before["recipe"] + f"; disco-zoo store {folder.name} --storage int8"
    assert after["metrics"]["test_top1_fp32"] == pytest.approx(before["metrics"]["test_top1"])
    assert after["files"][0]["size"] < 0.3 * before["files"][0]["size"]
    loaded = load_folder(folder)
    assert torch.equal(loaded.conv1.weight, storage_rounded(original.conv1.weight, "int8"))
    assert "top-1" in result.output and "as int8" in result.output

    widened = cli("store", str(folder), "--storage", "fp16")
    assert widened.exit_code != 0 and "rounding cannot be undone" in str(widened.exception)
    assert json.loads((folder / "config.json").read_text()) == after  # nothing rewritten
    bad = cli("store", str(folder), "--storage", "int4")
    assert bad.exit_code != 0 and "fp32, fp16, int8" in str(bad.exception)
