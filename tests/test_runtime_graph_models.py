"""The runtime executes what the graph adapter produces: depthwise and grouped convs,
concats, pixel shuffles, spatial outputs (gathered or reduced on the root), dict and
tuple outputs. Outputs equal the single-process masked model; bytes equal the accounting
per pair and per tag."""
import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_flatten_with_path

from disco_zoo.disco.partition import output_key, output_tag

from disco_zoo.registry import ModelEntry, register_model, unregister_model
from disco_zoo.runtime.session import seeded_input
from helpers import (
    LoopbackNodes, check_disco_run, expected_disco_bytes, graph_disco_folder,
    sparse_disco_folder,
)

TINY = {"tiny_grouped_two_outputs": "helpers:TinyGroupedTwoOutputs", "tiny_edsr": "helpers:TinyEDSR",
        "tiny_espcn": "helpers:TinyESPCN", "tiny_mean_shift": "helpers:TinyMeanShift",
        "tiny_group_norm": "helpers:TinyGroupNormHead", "tiny_two_level_head": "helpers:TinyTwoLevelHead",
        "tiny_shared_head": "helpers:TinySharedHead"}


@pytest.fixture
def tiny_entries():
    for arch, builder in TINY.items():
        register_model(ModelEntry(arch=arch, builder=builder, family="test-dag", source="disco", task="test"))
    yield
    for arch in TINY:
        unregister_model(arch)


@pytest.mark.parametrize("arch", list(TINY))
@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (3, (0.5, 0.3, 0.2))])
def test_tiny_dags_on_loopback_nodes(tmp_path, tiny_entries, arch, nodes, ratios):
    """Every node in its own thread over a real in-process wire."""
    if arch == "tiny_grouped_two_outputs" and nodes == 3:
        ratios = (0.5, 0.25, 0.25)  # 4 conv groups: every node needs a whole one
    folder, model, part = graph_disco_folder(tmp_path, arch, nodes, ratios)
    shape = [2, 3, 16, 16]
    x = seeded_input(shape, 0)
    with torch.no_grad():
        ref = model(x)
    outs, merged = LoopbackNodes(folder, nodes)(part, shape, x)
    (got, spec), (want, ref_spec) = tree_flatten(outs[0]), tree_flatten(ref)
    assert spec == ref_spec
    for a, b in zip(got, want):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert merged["tags"] == tags and merged["pairs"] == pairs
    if part.outputs:  # the gathered feature map is on the wire and in the accounting
        gather = part.outputs[0]
        leaf = {output_key(path): leaf for path, leaf in tree_flatten_with_path(ref)[0]}[gather.key]
        per_channel = leaf.numel() // leaf.shape[1] * 4  # fp32
        assert tags[output_tag(gather.key)] == sum(len(g) for g in gather.groups[1:]) * per_channel


@pytest.mark.parametrize("arch, args", [
    pytest.param("mobilenet_v2", {"num_classes": 10}, marks=pytest.mark.slow),  # depthwise-heavy classifier
    # torchvision's segmentation builders, reached through the torchvision entry's builder
    ("mobilenet_v2", {"tv_name": "lraspp_mobilenet_v3_large", "weights_backbone": None, "num_classes": 11}),
    ("mobilenet_v2", {"tv_name": "deeplabv3_mobilenet_v3_large", "weights_backbone": None, "num_classes": 11}),
])
def test_torchvision_dags_on_two_gloo_ranks(tmp_path, arch, args):
    folder, model, part = graph_disco_folder(tmp_path, arch, 2, args=args)
    assert part.grouped  # depthwise convs: on their node, nothing sent
    check_disco_run(folder, model, part, "gloo", 2, shape=[1, 3, 64, 64])


@pytest.mark.slow
def test_a_segmenter_served_across_calls_returns_its_dict(tmp_path):
    """disco_zoo.distributed keeps the model's {"out": ...} structure through the service."""
    import disco_zoo

    args = {"tv_name": "lraspp_mobilenet_v3_large", "weights_backbone": None, "num_classes": 11}
    folder, model, part = graph_disco_folder(tmp_path, "mobilenet_v2", 2, args=args)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
    with disco_zoo.distributed(folder, nodes=2, timeout_s=30) as served:
        out = served(x)
    assert list(out) == ["out"] and type(out) is type(ref)
    assert (out["out"] - ref["out"]).abs().max().item() <= 1e-4
