"""Per-node safetensors shards: only what a node needs, exact round trip, hashes checked."""
import json
import random

import pytest
import timm
import torch

from disco_zoo.disco.adapters import apply_partition, to_disco
from disco_zoo.disco.partition import Partition
from disco_zoo.disco.shards import load_node_shard, load_shards_into, save_shards, shard_file
from disco_zoo.errors import DiscoZooError

EXTRA = {"arch": "resnet18", "args": {"num_classes": 10}}

MODELS = {
    "resnet18": ("resnet18", {}),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 1}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": 32, "window_size": 4, "embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (4, 4, 4, 4)},
    ),
}


def build(family: str):
    name, kwargs = MODELS[family]
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def randomly_pruned(family: str, nodes: int, ratios=None):
    """A DISCO model with random S_kj subsets (about a third kept) and random BN statistics."""
    torch.manual_seed(0)
    model = to_disco(build(family), nodes, ratios)
    part = model.disco_partition
    rng = random.Random(0)
    for layer in part.layers.values():
        layer.selected = [[sorted(c for c in s if rng.random() < 0.3) for s in row] for row in layer.selected]
    apply_partition(model, part)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.uniform_(-1, 1)
    return model


@pytest.mark.parametrize("family, nodes, ratios", [("resnet18", 4, None), ("resnet18", 2, (0.6, 0.4)),
                                                   ("vit", 2, None), ("swin", 4, None)])
def test_round_trip_is_exact(tmp_path, family, nodes, ratios):
    model = randomly_pruned(family, nodes, ratios)
    save_shards(model, tmp_path / "m", extra={"arch": family})
    loaded = load_shards_into(build(family), tmp_path / "m").eval()
    assert loaded.disco_partition.to_dict() == model.disco_partition.to_dict()
    effective = {n: (m.masked_weight() if hasattr(m, "masked_weight") else None) for n, m in model.named_modules()}
    for name, tensor in loaded.state_dict().items():
        module, _, leaf = name.rpartition(".")
        masked = leaf == "weight" and effective.get(module) is not None
        expected = effective[module] if masked else model.state_dict()[name]
        assert torch.equal(tensor, expected), name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_node_file_holds_only_its_part(tmp_path):
    model = randomly_pruned("resnet18", 2)
    part = model.disco_partition
    save_shards(model, tmp_path / "m", extra=EXTRA)
    (tmp_path / "m" / shard_file(0)).unlink()  # node 1 needs nothing but its own file
    part1, tensors = load_node_shard(tmp_path / "m", 1)
    assert part1.to_dict() == part.to_dict()
    conv = part.layers["layer1.0.conv1"]
    assert tensors["layer1.0.conv1.weight"].shape == (len(conv.out_groups[1]), len(conv.columns(1)), 3, 3)
    assert len(conv.columns(1)) < conv.in_channels  # pruned columns are not stored
    assert tensors["layer1.0.bn1.running_mean"].shape == (32,)
    fc = part.layers["fc"]
    assert tensors["fc.weight"].shape == (10, len(fc.in_groups[1])) and "fc.bias" not in tensors  # bias on root
    dense_numel = sum(t.numel() for t in model.state_dict().values())
    assert sum(t.numel() for t in tensors.values()) < 0.75 * dense_numel
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert [f["name"] for f in config["files"]] == ["node0.safetensors", "node1.safetensors"]
    assert all(len(f["sha256"]) == 64 for f in config["files"])
    assert Partition.from_dict(config["partition"]).to_dict() == part.to_dict()


def test_damaged_shard_is_refused(tmp_path):
    save_shards(randomly_pruned("resnet18", 2), tmp_path / "m", extra=EXTRA)
    path = tmp_path / "m" / shard_file(1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DiscoZooError, match="sha256"):
        load_node_shard(tmp_path / "m", 1)
    with pytest.raises(DiscoZooError, match="does not exist"):
        load_node_shard(tmp_path / "m", 2)
