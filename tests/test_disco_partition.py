"""The partition description: groups, residual maps, unequal splits, JSON."""
import subprocess
import sys

import pytest
import timm
from torch import nn

from disco_zoo.disco.adapters import build_partition
from disco_zoo.disco.partition import Partition, contiguous_groups, interleave_groups
from disco_zoo.errors import DiscoZooError


def test_groups_and_runs():
    from disco_zoo.disco.partition import from_runs, to_runs

    assert to_runs([0, 1, 2, 5, 7, 8]) == [[0, 3], [5, 6], [7, 9]] and to_runs([]) == []
    assert from_runs(to_runs([3, 4, 9])) == [3, 4, 9]
    assert contiguous_groups(10, 2, (0.6, 0.4)) == [list(range(6)), list(range(6, 10))]
    assert [len(g) for g in contiguous_groups(64, 8)] == [8] * 8
    assert interleave_groups([[0], [1, 2]], width=3, copies=2) == [[0, 3], [1, 2, 4, 5]]


@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (8, None), (2, (0.6, 0.4)), (3, (3, 2, 1))])
def test_resnet50_partition(nodes, ratios):
    part = build_partition(timm.create_model("resnet50"), nodes, ratios)
    assert len(part.layers) == 54 and part.nodes == nodes
    layers = part.layers
    want = [len(g) for g in contiguous_groups(256, nodes, ratios)]
    # residual adds stay local: the block output map equals the shortcut map
    assert layers["layer1.0.conv3"].out_groups == layers["layer1.0.downsample.0"].out_groups
    assert layers["layer1.1.conv3"].out_groups == layers["layer1.1.conv1"].in_groups
    assert [len(g) for g in layers["layer1.0.conv3"].out_groups] == want
    # each layer's input map is its producer's output map
    assert layers["layer1.0.conv2"].in_groups == layers["layer1.0.conv1"].out_groups
    assert part.tensors["layer1.0.bn3.weight"].groups == layers["layer1.0.conv3"].out_groups
    fc = layers["fc"]
    assert fc.mode == "reduce" and fc.out_groups[0] == list(range(1000)) and all(not g for g in fc.out_groups[1:])
    # masks open: S_kj is all of node j's channels
    conv = layers["layer2.0.conv2"]
    assert conv.selected[0][1] == conv.in_groups[1] and conv.selected[1][1] == []


def test_json_round_trip_and_validation():
    part = build_partition(timm.create_model("resnet18"), 2, (0.6, 0.4)).with_all_closed()
    part.layers["layer1.0.conv1"].selected[0][1] = [40, 50]
    text = part.to_json()
    again = Partition.from_json(text)
    assert again == part and again.to_dict() == part.to_dict()
    assert again.layers["layer1.0.conv1"].columns(0) == sorted(part.layers["layer1.0.conv1"].in_groups[0] + [40, 50])
    bad = part.to_dict()
    assert bad["layers"][1]["in_groups"] == [[[0, 38]], [[38, 64]]]  # stored as half-open runs
    bad["layers"][1]["selected"][0][1] = [[0, 1]]  # channel 0 belongs to node 0, not node 1
    with pytest.raises(DiscoZooError, match="does not hold"):
        Partition.from_dict(bad)


def test_vit_and_swin_split_by_heads():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, num_heads=4, depth=1)
    part = build_partition(vit, 2, (0.75, 0.25))
    emb = part.layers["blocks.0.attn.proj"].out_groups
    assert [len(g) for g in emb] == [48, 16]  # 3 heads | 1 head of 16 channels
    assert part.tensors["pos_embed"].dim == 2 and part.tensors["pos_embed"].groups == emb
    assert set(part.norms) == {"blocks.0.norm1", "blocks.0.norm2", "norm"}
    swin = timm.create_model("swin_tiny_patch4_window7_224", img_size=32, window_size=4, embed_dim=32,
                             depths=(1, 1, 1, 1), num_heads=(2, 4, 4, 8))
    part = build_partition(swin, 2)
    merge = part.layers["layers.1.downsample.reduction"]
    stage0 = part.layers["layers.0.blocks.0.attn.proj"].out_groups
    assert merge.in_groups == interleave_groups(stage0, 32, 4)
    assert merge.out_groups == part.layers["layers.1.blocks.0.attn.qkv"].in_groups
    assert part.tensors["layers.3.blocks.0.attn.relative_position_bias_table"].groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert "layers.1.downsample.norm" in part.norms


def test_registry_variants_and_cli_import_stay_light():
    code = (
        "import sys, disco_zoo.registry as r, disco_zoo.commands.sparsify\n"
        "names = r.list_models('*disco*')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print(' '.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    for name in ("resnet18_disco_2node", "resnet18_disco_4node", "resnet50_disco_2node", "resnet50_disco_4node",
                 "vit_tiny_disco_2node", "swin_micro_disco_2node"):
        assert name in out


def test_registry_builds_disco_model():
    import disco_zoo

    model = disco_zoo.create_model("resnet18_disco_4node", num_classes=10)
    assert model.disco_partition.nodes == 4 and model.disco_partition.family == "resnet"
    vit = disco_zoo.create_model("vit-tiny-disco-2node", num_classes=10)
    assert vit.disco_partition.nodes == 2
    with pytest.raises(DiscoZooError):
        build_partition(nn.Sequential(nn.LSTM(3, 3)), 2)
