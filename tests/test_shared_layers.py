"""A layer called more than once in one forward (a detector head shared across FPN levels):
one split (one mask set, one weight shard) for every call, each call's exchange counted,
tagged (``name``, ``name@1``, ...) and run on its own."""
import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from disco_zoo.disco.accounting import disco_accounting, layer_channel_bytes, layer_shapes
from disco_zoo.disco.adapters import apply_partition, build_partition, to_disco
from disco_zoo.disco.partition import Partition
from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import ModelEntry, register_model, unregister_model
from disco_zoo.runtime.disco_executor import disco_tags
from disco_zoo.runtime.session import seeded_input
from helpers import (
    LoopbackNodes, TinySharedDepthwise, TinySharedHead, expected_disco_bytes, graph_disco_folder,
)

SHAPE = (2, 3, 16, 16)  # level 0 at 16x16, level 1 at 8x8


@pytest.fixture
def registered():
    """Registers the tiny shared-head model and FCOS cut at its seams (backbone+FPN+head)."""
    entries = {"tiny_shared_head": "helpers:TinySharedHead", "tiny_shared_depthwise": "helpers:TinySharedDepthwise",
               "fcos_core": "helpers:fcos_core"}
    for arch, builder in entries.items():
        register_model(ModelEntry(arch=arch, builder=builder, family="test-dag", source="disco", task="test"))
    yield
    for arch in entries:
        unregister_model(arch)


def test_a_shared_layer_keeps_one_split_for_every_call():
    part = build_partition(TinySharedHead(), 2, (0.7, 0.3))
    assert {n: l.calls for n, l in part.layers.items()} == {
        "stem": 1, "down": 1, "lat_coarse": 1, "lat_fine": 1, "tower.0": 2, "cls": 2}
    tower, cls = part.layers["tower.0"], part.layers["cls"]
    assert tower.mode == "split" and cls.mode == "reduce"
    # both levels feed the tower on one map: the two laterals' outputs share it
    assert tower.in_groups == part.layers["lat_fine"].out_groups == part.layers["lat_coarse"].out_groups
    assert tower.in_groups == [list(range(6)), [6, 7]]  # GroupNorm(4, 8): whole groups of 2, by 0.7/0.3
    assert part.tensors["tower.1.weight"].groups == tower.out_groups  # the shared GroupNorm: one slice
    assert cls.call_keys() == ["cls", "cls@1"] and part.layers["stem"].call_keys() == ["stem"]
    tags = disco_tags(part)
    assert tags["tower.0@1"] == "tower.0@1" and tags["stem"] == "stem"
    again = Partition.from_json(part.to_json())
    assert again.to_dict() == part.to_dict() and again.layers["cls"].calls == 2
    # a layer called once writes no "calls": published configs (and their digests) are unchanged
    written = {d["name"]: d for d in part.to_dict()["layers"]}
    assert "calls" not in written["stem"] and written["tower.0"]["calls"] == 2


class _TwoMaps(nn.Module):
    """One conv called on two concats whose halves split differently: no one map fits both."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.c, self.d = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.shared(torch.cat([self.a(x), self.b(x)], 1)), self.shared(torch.cat([self.c(x), self.d(x)], 1))


class _HeadAndMiddle(nn.Module):
    """One conv that is a head in one call and feeds another conv in the other."""

    def __init__(self):
        super().__init__()
        self.conv, self.shared, self.after = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.shared(y), self.after(self.shared(y))


class _SharedNorm(nn.Module):
    """One BatchNorm on two concats whose halves split differently."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.c, self.d = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(8)
        self.head_1, self.head_2 = nn.Conv2d(8, 2, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return (self.head_1(self.bn(torch.cat([self.a(x), self.b(x)], 1))),
                self.head_2(self.bn(torch.cat([self.c(x), self.d(x)], 1))))


def test_shared_grouped_convs_and_norms_keep_one_slice():
    part = build_partition(TinySharedDepthwise(), 2, (0.7, 0.3))
    lat = part.layers["lat_a"].out_groups
    assert part.layers["lat_b"].out_groups == lat and part.layers["head"].in_groups == lat
    assert part.grouped["dw"].in_groups == part.grouped["dw"].out_groups == lat
    assert part.tensors["bn.running_mean"].groups == part.tensors["dw.weight"].groups == lat
    assert part.layers["head"].calls == 2 and part.layers["head"].mode == "reduce"


@pytest.mark.parametrize("model, message", [
    (_SharedNorm(), r"'bn.weight' is used by fx nodes bn, bn_1, so all their tensors share one map"),
    (_TwoMaps(), r"fix different channel maps .*layer 'shared' is called on fx nodes shared, shared_1, so all its "
                 r"inputs share one map"),
    (_HeadAndMiddle(), r"layer 'shared' is called on fx nodes shared, shared_1; its call shared_1 is a split layer "
                       r"but shared a reduce one"),
])
def test_calls_that_cannot_share_one_split_are_a_clear_error(model, message):
    with pytest.raises(DiscoZooError, match=message):
        build_partition(model, 2, None)


def test_accounting_counts_every_call_at_its_own_size():
    torch.manual_seed(0)
    model = to_disco(TinySharedHead(), 2).eval()  # masks open, equal split: 4 channels per node
    acc = disco_accounting(model, SHAPE)
    level0, level1 = 16 * 16 * 2 * 4, 8 * 8 * 2 * 4  # bytes of one channel (batch 2, fp32) per level
    # the tower's conv: each node sends the other its 4 channels, at each level's size
    assert acc.bytes_per_layer["tower.0"] == 2 * 4 * level0 and acc.bytes_per_layer["tower.0@1"] == 2 * 4 * level1
    # the head reduces on root 0: node 1 sends its partial 3-channel map at each level
    assert acc.bytes_per_layer["cls"] == 3 * level0 and acc.bytes_per_layer["cls@1"] == 3 * level1
    assert acc.disco_bytes == sum(acc.bytes_per_layer.values()) == sum(acc.bytes_per_pair.values())
    # what closing one selected channel of the tower saves: its bytes at both levels
    tower = model.disco_partition.layers["tower.0"]
    assert layer_channel_bytes(tower, layer_shapes(model, SHAPE), 4) == level0 + level1
    # node 1 -> root: the head's partials at both levels and the gathered features, less the
    # stem's image channel (3 channels split 2/1, so node 0 sends one channel more)
    assert acc.bytes_per_pair[(1, 0)] - acc.bytes_per_pair[(0, 1)] == 3 * (level0 + level1) + 4 * level1 - level0
    # FLOPs: one weight entry costs 2 x 3x3 per position at both levels; masks open = dense
    assert acc.flops_per_entry["tower.0"] == 2 * 9 * (16 * 16 + 8 * 8) * 2
    assert abs(acc.flops_total - acc.flops_dense) <= 2
    closed = disco_accounting(apply_partition(model, model.disco_partition.with_all_closed()), SHAPE)
    # closing the masks saves the off-diagonal half of every split conv call (the stem's 3
    # image channels split 2/1, its outputs 4/4: also half), both calls of the shared tower
    saved = acc.flops_total - closed.flops_total
    per_level = lambda c_in, c_out, k, positions: 2 * k * k * c_in * c_out // 2 * positions  # noqa: E731
    assert saved == pytest.approx(
        per_level(3, 8, 3, 512) + per_level(8, 8, 3, 128) + per_level(8, 8, 1, 128) + per_level(8, 8, 1, 512)
        + per_level(8, 8, 3, 512) + per_level(8, 8, 3, 128), abs=4)
    # the largest working set is the tower's level-0 call (inputs held + outputs made, both full here)
    assert acc.act_peak_per_node == [(8 + 4) * level0] * 2


def test_shapes_refuse_a_partition_written_for_another_call_count():
    model = to_disco(TinySharedHead(), 2).eval()
    model.disco_partition.layers["cls"].calls = 1
    with pytest.raises(DiscoZooError, match=r"layer 'cls' ran 2 time\(s\) in one forward but its partition says 1"):
        layer_shapes(model, SHAPE)


@pytest.mark.parametrize("arch", ["tiny_shared_head", "tiny_shared_depthwise"])
@pytest.mark.parametrize("nodes, ratios", [(2, None), (2, (0.7, 0.3)), (4, None)])
def test_shared_head_on_loopback_nodes(tmp_path, registered, arch, nodes, ratios):
    """Each call of the shared tower and head exchanges its own messages: the nodes'
    output equals the masked model's and every call's bytes are on the wire under its tag."""
    folder, model, part = graph_disco_folder(tmp_path, arch, nodes, ratios)
    shape = list(SHAPE)
    x = seeded_input(shape, 0)
    with torch.no_grad():
        ref = model(x)
    run = LoopbackNodes(folder, nodes)
    for _ in range(2):  # a second inference starts again at each shared layer's first call
        outs, merged = run(part, shape, x)
        (got, spec), (want, ref_spec) = tree_flatten(outs[0]), tree_flatten(ref)
        assert spec == ref_spec
        assert all(a.shape == b.shape and (a - b).abs().max().item() <= 1e-4 for a, b in zip(got, want))
        tags, pairs = expected_disco_bytes(model, part, shape)
        assert merged["tags"] == tags and merged["pairs"] == pairs
        assert {"tower.0@1", "cls@1"} <= set(merged["tags"]) if arch == "tiny_shared_head" else "head@1" in merged["tags"]


@pytest.mark.slow
@pytest.mark.parametrize("nodes", [2, 4])
def test_fcos_backbone_fpn_and_shared_heads_on_loopback_nodes(tmp_path, registered, nodes):
    """torchvision's FCOS (the zoo's ResNet-18 C3-C4 FPN, P3-P4) from the image to its heads'
    outputs: the backbone, the FPN and the head towers split, the heads shared across both levels."""
    folder, model, part = graph_disco_folder(tmp_path, "fcos_core", nodes)
    shared = {n for n, l in part.layers.items() if l.calls == 2}
    assert len(shared) == 11 and all(n.startswith("head.") for n in shared)  # 2 towers of 4 convs, 3 heads
    assert {n for n, l in part.layers.items() if l.mode == "reduce"} == {
        "head.classification_head.cls_logits", "head.regression_head.bbox_reg", "head.regression_head.bbox_ctrness"}
    shape = [1, 3, 64, 64]
    x = seeded_input(shape, 0)
    with torch.no_grad():
        ref = model(x)
    outs, merged = LoopbackNodes(folder, nodes, timeout_s=60)(part, shape, x)
    assert sorted(outs[0]) == ["bbox_ctrness", "bbox_regression", "cls_logits"]
    for key, want in ref.items():
        assert outs[0][key].shape == want.shape and (outs[0][key] - want).abs().max().item() <= 1e-4, key
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert merged["tags"] == tags and merged["pairs"] == pairs
    assert "head.classification_head.cls_logits@1" in tags


def test_onnx_export_follows_each_call(tmp_path, registered):
    """The exporter traces the executor's node model, so each call's exchange is a step of
    its own in the node program: the lean ONNX runner's output and bytes per tag match."""
    import numpy as np

    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.runtime.session import run_entry
    from helpers import ONNX_ENTRY

    folder, model, part = graph_disco_folder(tmp_path, "tiny_shared_head", 2, (0.7, 0.3), args={"features": False})
    shape = list(SHAPE)
    export_onnx(folder, tmp_path / "onnx", shape)
    np.save(tmp_path / "x.npy", seeded_input(shape, 0).numpy())
    with torch.no_grad():
        ref = model(seeded_input(shape, 0))
    run = run_entry(ONNX_ENTRY, 2, "mpi", timeout_s=30,
                    args={"program": str(tmp_path / "onnx"), "input_shape": shape, "input_path": str(tmp_path / "x.npy")})
    assert (run.output - ref).abs().max().item() <= 1e-4
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert run.bytes["tags"] == tags and run.bytes["pairs"] == pairs and "cls@1" in tags
