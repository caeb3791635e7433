"""The DISCO executor: distributed output == single-process masked model, and the bytes
on the wire == the DISCO accounting's prediction, message for message."""
import random

import pytest
import torch

from disco_zoo.disco.accounting import disco_traffic, layer_shapes
from disco_zoo.disco.adapters import apply_partition, get_partition, to_disco
from disco_zoo.disco.shards import save_shards
from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import create_model
from disco_zoo.runtime.disco_executor import INPUT_TAG
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.transport import ByteCounter

SHAPE = [2, 3, 32, 32]
ENTRY = "disco_zoo.runtime.disco_executor:run_disco"


TINY_VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 2})
TINY_SWIN = (
    "swin_tiny_patch4_window7_224",
    {"img_size": 32, "window_size": 4, "embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (4, 4, 4, 4)},
)


def _sparse_disco_folder(tmp_path, nodes, ratios=None, seed=0, arch="resnet18", args=None):
    """``arch`` (10 classes) over ``nodes`` nodes with random S_kj subsets, random BN
    statistics, saved as shards; returns (folder, masked model, partition)."""
    torch.manual_seed(seed)
    args = {**(args or {}), "num_classes": 10}
    model = to_disco(create_model(arch, **args), nodes, ratios).eval()
    rng = random.Random(seed)
    part = get_partition(model).with_random_selection(rng)
    for layer in part.layers.values():
        if layer.mode == "split":
            # compute pruning: each node skips some of its own channels
            layer.dropped = [sorted(c for c in own if rng.random() < 0.1) for own in layer.in_groups]
    apply_partition(model, part)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folder = tmp_path / "shards"
    save_shards(model, folder, extra={"arch": arch, "args": args})
    return folder, model, part


def _check(folder, model, part, backend, nodes, wire_dtype="fp32"):
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))  # what run_disco draws with seed 0
    with torch.no_grad():
        ref = model(x)
        dense = apply_partition(model, part.with_all_open())(x)
    apply_partition(model, part)
    assert (dense - ref).abs().max().item() > 1e-3  # the masks matter: a wrong exchange would show
    assert any(any(layer.dropped) for layer in part.layers.values() if layer.mode == "split")

    results = launch(
        ENTRY, nodes, backend, args={"folder": str(folder), "input_shape": SHAPE}, timeout_s=30, wire_dtype=wire_dtype
    )
    out = torch.tensor(results[0]["logits"])
    assert out.shape == ref.shape
    tolerance = 1e-4 if wire_dtype == "fp32" else 5e-2 * ref.abs().max().item()
    assert (out - ref).abs().max().item() <= tolerance

    dtype_bytes = 4 if wire_dtype == "fp32" else 2
    per_layer, per_pair = disco_traffic(part, layer_shapes(model, tuple(SHAPE)), dtype_bytes)
    merged = ByteCounter.merge([r["bytes"] for r in results])
    tags = dict(merged["tags"])
    first = next(iter(part.layers.values()))
    image_bytes = {k: len(first.in_groups[k]) * SHAPE[0] * SHAPE[2] * SHAPE[3] * dtype_bytes for k in range(1, nodes)}
    assert tags.pop(INPUT_TAG) == sum(image_bytes.values())
    assert tags == {name: n for name, n in per_layer.items() if n}
    expected_pairs = dict(per_pair)
    for k, n in image_bytes.items():
        expected_pairs[(0, k)] = expected_pairs.get((0, k), 0) + n
    assert merged["pairs"] == {p: n for p, n in expected_pairs.items() if n}
    # each rank holds only its own shard: fewer parameters than the whole model
    total = sum(p.numel() for p in model.parameters())
    assert all(r["params"] < total for r in results)
    return results


@pytest.mark.parametrize("backend", ["mpi", "gloo"])
def test_resnet18_two_nodes_matches_masked_model_and_accounting(tmp_path, backend):
    folder, model, part = _sparse_disco_folder(tmp_path, 2)
    _check(folder, model, part, backend, 2)


def test_vit_split_layernorms_and_local_heads(tmp_path):
    arch, args = TINY_VIT
    folder, model, part = _sparse_disco_folder(tmp_path, 2, arch=arch, args=args)
    assert part.norms  # the LayerNorm statistics exchange is exercised and counted
    _check(folder, model, part, "gloo", 2)


def test_swin_windows_patch_merging_and_local_heads(tmp_path):
    arch, args = TINY_SWIN
    folder, model, part = _sparse_disco_folder(tmp_path, 2, arch=arch, args=args)
    assert any("downsample.norm" in name for name in part.norms)
    _check(folder, model, part, "mpi", 2)


def test_fp16_wire_halves_every_message(tmp_path):
    folder, model, part = _sparse_disco_folder(tmp_path, 2)
    _check(folder, model, part, "mpi", 2, wire_dtype="fp16")


def test_wrong_world_size_is_a_clear_error(tmp_path):
    folder, _, _ = _sparse_disco_folder(tmp_path, 2)
    with pytest.raises(DiscoZooError, match="split over 2 nodes; run it with 2 ranks, not 3"):
        launch(ENTRY, 3, "mpi", args={"folder": str(folder), "input_shape": SHAPE}, timeout_s=20)


def test_damaged_shard_is_refused(tmp_path):
    folder, _, _ = _sparse_disco_folder(tmp_path, 2)
    with open(folder / "node1.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\1\2\3")
    with pytest.raises(DiscoZooError, match=r"node1.safetensors sha256 \S+ differs from config.json"):
        launch(ENTRY, 2, "mpi", args={"folder": str(folder), "input_shape": SHAPE}, timeout_s=20)
