"""The generic graph adapter: partitions from map propagation over the torch.fx graph."""
import copy
import json
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from torch.utils._pytree import tree_flatten_with_path, tree_leaves

from disco_zoo.disco.adapters import apply_partition, build_partition, to_disco
from disco_zoo.disco.partition import Partition, call_key, contiguous_groups, layer_of, output_key
from disco_zoo.errors import DiscoZooError
from helpers import (
    TinyEDSR, TinyESPCN, TinyGroupedTwoOutputs, TinyGroupNormHead, TinyMeanShift, TinySharedDepthwise, TinySharedHead,
    TinyTwoLevelHead, randomise_batchnorm, tiny_deeplabv3, tiny_lraspp,
)

HUB = Path(__file__).resolve().parents[1] / "hub"


def _hand_written(model: nn.Module, family: str, nodes: int, ratios, head: str) -> Partition:
    """The split the ResNet/Sequential adapters wrote by hand before the graph adapter: every
    conv/linear/BatchNorm by contiguous channel groups, in module order, ``head`` reduces."""
    ratios = [float(r) for r in ratios] if ratios else [1.0] * nodes
    part = Partition(family, nodes, ratios)
    groups = lambda c: contiguous_groups(c, nodes, ratios)  # noqa: E731
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            part.add_layer(name, "conv", groups(module.in_channels), groups(module.out_channels))
        elif type(module) is nn.Linear:
            mode = "reduce" if name == head else "split"
            part.add_layer(name, "linear", groups(module.in_features), groups(module.out_features), mode=mode)
        elif isinstance(module, nn.BatchNorm2d):
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                part.add_tensor(f"{name}.{tensor}", 0, groups(module.num_features))
    return part


def _sequential() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "sequential"])
@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (8, None), (2, (0.6, 0.4))])
def test_generic_partition_equals_hand_written(arch, nodes, ratios):
    if arch == "sequential":
        model, family, head = _sequential(), "sequential", "8"
    else:
        model, family, head = timm.create_model(arch, pretrained=False, num_classes=10), "resnet", "fc"
    generic = build_partition(model, nodes, ratios)
    assert generic.to_dict() == _hand_written(model, family, nodes, ratios, head).to_dict()
    assert not generic.grouped and not generic.outputs  # the head reduces: nothing to gather


def _published_disco_folders() -> list[Path]:
    return sorted(p.parent for p in HUB.glob("*/config.json") if "partition" in json.loads(p.read_text()))


def test_published_partitions_load_and_are_reproduced():
    """Every published DISCO config loads, those written before the grouped/outputs keys
    existed too, and the adapters rebuild its partition (masks open) exactly, so the
    published shards still fit."""
    from disco_zoo.registry import build_model

    folders = _published_disco_folders()
    legacy = [f for f in folders if "grouped" not in json.loads((f / "config.json").read_text())["partition"]]
    assert legacy and len(legacy) < len(folders)
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        published = Partition.from_dict(config["partition"])
        torch.manual_seed(0)
        model = build_model(config["arch"], **config["args"])
        assert model.disco_partition.to_dict() == published.with_all_open().to_dict(), folder.name


SEGMENTERS = {"deeplabv3_r18": tiny_deeplabv3, "lraspp": tiny_lraspp}
SMALL = {"edsr": TinyEDSR, "espcn": TinyESPCN, "grouped_two_outputs": TinyGroupedTwoOutputs, "mean_shift": TinyMeanShift,
         "group_norm": TinyGroupNormHead, "two_level_head": TinyTwoLevelHead, "shared_head": TinySharedHead,
         "shared_depthwise": TinySharedDepthwise}


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name in SEGMENTERS:
        return randomise_batchnorm(SEGMENTERS[name]()).eval(), torch.randn(1, 3, 64, 64)
    return randomise_batchnorm(SMALL[name]()).eval(), torch.randn(2, 3, 16, 16)


def _reduce_inputs(model: nn.Module, part: Partition, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input of every call of every reduce layer (``name``, ``name@1``, ... for a layer
    shared across levels) and every model output, for one forward."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    def keep(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen[call_key(name, sum(layer_of(key) == name for key in seen))] = args[0].detach()

        return hook

    hooks = [modules[n].register_forward_hook(keep(n)) for n, l in part.layers.items() if l.mode == "reduce"]
    with torch.no_grad():
        out = model(x)
    for hook in hooks:
        hook.remove()
    leaves = {output_key(path): leaf for path, leaf in tree_flatten_with_path(out)[0]}
    seen.update({f"output:{gather.key}": leaves[gather.key] for gather in part.outputs})
    return seen


def _check_open_and_block_diagonal(name: str, nodes: int, ratios) -> None:
    dense, x = _model(name)
    with torch.no_grad():
        ref = tree_leaves(dense(x))
    disco = to_disco(copy.deepcopy(dense), nodes, ratios).eval()
    part = disco.disco_partition
    with torch.no_grad():
        opened = tree_leaves(disco(x))
    assert max((a - b).abs().max().item() for a, b in zip(opened, ref)) <= 1e-5
    assert {k: v.shape for k, v in disco.state_dict().items()} == {k: v.shape for k, v in dense.state_dict().items()}
    # masks closed: a block-diagonal model. What node 0 computes never sees another node's
    # image channels (the inputs of every reduce head and every gathered output, on node 0's
    # channels), while the whole output does change
    apply_partition(disco, part.with_all_closed())
    first = next(iter(part.layers.values()))
    y = x.clone()
    y[:, [c for k in range(1, nodes) for c in first.in_groups[k]]] += 1.0
    seen_x, seen_y = _reduce_inputs(disco, part, x), _reduce_inputs(disco, part, y)
    assert seen_x
    for key, value in seen_x.items():
        if key.startswith("output:"):
            own = next(o for o in part.outputs if f"output:{o.key}" == key).groups[0]
        else:
            own = part.layers[layer_of(key)].in_groups[0]
        assert torch.equal(value[:, own], seen_y[key][:, own]), key
        assert not torch.equal(value, seen_y[key]), key
    with torch.no_grad():
        closed = tree_leaves(disco(x))
    assert max((a - b).abs().max().item() for a, b in zip(closed, ref)) > 1e-4


@pytest.mark.parametrize("name", list(SMALL))
@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (2, (0.7, 0.3))])
def test_small_dags_masks_open_dense_closed_block_diagonal(name, nodes, ratios):
    _check_open_and_block_diagonal(name, nodes, ratios)


@pytest.mark.parametrize("name", list(SEGMENTERS))
@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (2, (0.7, 0.3))])
def test_segmenters_masks_open_dense_closed_block_diagonal(name, nodes, ratios):
    _check_open_and_block_diagonal(name, nodes, ratios)


def test_what_the_rules_give():
    """Depthwise convs share their input's map, grouped convs keep groups whole, heads
    reduce, the split feature output is gathered, and LRASPP's two classifiers both reduce."""
    model, _ = _model("grouped_two_outputs")
    part = build_partition(model, 2, None)
    assert part.family == "graph"
    assert part.grouped["dw"].in_groups == part.grouped["dw"].out_groups == part.layers["stem"].out_groups
    grouped = part.grouped["grouped"]
    assert grouped.in_groups == [list(range(8)), list(range(8, 16))]  # 4 groups of 4 inputs, 2 per node
    assert grouped.out_groups == [list(range(4)), list(range(4, 8))]
    assert [grouped.local_groups(k) for k in range(2)] == [2, 2]
    assert part.tensors["grouped.weight"].groups == grouped.out_groups
    assert part.layers["head"].mode == "reduce" and part.layers["feat"].mode == "split"
    assert [(o.key, o.groups) for o in part.outputs] == [("0", part.layers["feat"].out_groups)]
    # the concat composes [g | side]; pixel_shuffle maps channel c to input block c*4..c*4+3
    up_in = part.layers["up"].in_groups
    assert up_in == [g + [8 + c for c in s] for g, s in zip(grouped.out_groups, part.layers["side"].out_groups)]
    up_out = part.layers["up"].out_groups
    assert part.layers["feat"].in_groups == [sorted({c // 4 for c in g}) for g in up_out]
    lraspp = build_partition(tiny_lraspp(), 2, None)
    assert {n for n, l in lraspp.layers.items() if l.mode == "reduce"} == {
        "classifier.low_classifier", "classifier.high_classifier"}
    assert all(g.conv_groups == sum(len(c) for c in g.in_groups) for g in lraspp.grouped.values())  # depthwise


def test_per_channel_constants_are_sliced_by_their_map():
    part = build_partition(TinyMeanShift(), 2, None)
    assert part.tensors["mean_in"].dim == 1 and part.tensors["mean_in"].groups == part.layers["conv"].in_groups
    assert part.tensors["gamma"].dim == 1 and part.tensors["gamma"].groups == part.layers["conv"].out_groups
    assert "mean_out" not in part.tensors  # used after the head, on root's whole tensor: replicated


def test_partition_json_round_trip_keeps_grouped_and_outputs():
    part = build_partition(TinyGroupedTwoOutputs(), 4, (0.3, 0.3, 0.2, 0.2))
    again = Partition.from_json(part.to_json())
    assert again.to_dict() == part.to_dict() and again.grouped and again.outputs
    old = part.to_dict()
    del old["grouped"], old["outputs"]  # a config written before these existed
    loaded = Partition.from_dict(old)
    assert loaded.grouped == {} and loaded.outputs == []


class _Reshape(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 2)
        self.pretrained_cfg = {"input_size": (3, 6, 6)}  # the probe input it takes

    def forward(self, x):
        return self.fc(self.conv(x).view(x.shape[0], -1))


class _ChannelConstant(nn.Module):
    """One per-channel shift on two different maps: it cannot be sliced one way."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)
        self.register_buffer("shift", torch.linspace(0, 1, 8).view(1, 8, 1, 1))
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.conv(x) - self.shift, torch.cat([self.a(x), self.b(x)], 1) - self.shift], 1))


class _ComputedScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gamma = nn.Parameter(torch.ones(8))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.conv(x) * self.gamma.view(1, -1, 1, 1))


class _Chunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a, b = self.conv(x).chunk(2, dim=1)
        return self.head(a * b)


class _AfterHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        y = self.conv(x)
        return self.head(y) + torch.relu(y).mean((2, 3), keepdim=True)


class _PlainGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8, affine=False)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.norm(self.conv(x)))


@pytest.mark.parametrize("model, message", [
    (_Reshape(), r"view \(fx node view\) has no DISCO rule"),
    (_ChannelConstant(), r"the constant 'shift' is used with tensors on different channel maps"),
    (_ComputedScale(), r"per-channel value 'view' of shape \[1, 8, 1, 1\] that is not a state-dict tensor"),
    (_Chunk(), r"chunk \(fx node chunk\) returns several tensors"),
    (_AfterHead(), r"joins a tensor that lives on the root only"),
    (_PlainGroupNorm(), r"GroupNorm\(affine=False\) has no per-channel weight"),
    (nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 8, 3, groups=2)), r"leaves a node without a group"),
])
def test_an_op_it_cannot_map_is_a_clear_error(model, message):
    with pytest.raises(DiscoZooError, match=message):
        build_partition(model, 4 if isinstance(model, nn.Sequential) else 2, None)


def test_accounting_of_depthwise_grouped_and_gathers():
    """LRASPP at 64 px: masks open, the nodes' FLOPs add up to the dense model's; grouped and
    depthwise convs send nothing (DISCO and dense within-layer parallelism alike) and their
    FLOPs and weights go to the node that holds their groups; a gathered output is counted."""
    from disco_zoo.disco.accounting import disco_accounting
    from disco_zoo.graph import trace_model
    from disco_zoo.graph.accounting import dense_tp_traffic

    model = to_disco(tiny_lraspp(), 2).eval()
    part = model.disco_partition
    acc = disco_accounting(model, (1, 3, 64, 64))
    assert abs(acc.flops_total - acc.flops_dense) <= 2  # rounding per node
    assert not set(acc.bytes_per_layer) & set(part.grouped)
    dense = dense_tp_traffic(trace_model(model, (1, 3, 64, 64)), 2)
    depthwise = [n for n, g in part.grouped.items() if g.conv_groups == sum(len(c) for c in g.in_groups)]
    assert depthwise and all(dense.per_layer.get(n, 0) == 0 for n in depthwise)
    # every weight is sliced (grouped ones by their groups): the nodes' shares add up to the model
    assert sum(acc.params_per_node) == acc.params_dense and max(acc.params_per_node) < 0.51 * acc.params_dense

    tiny = to_disco(TinyGroupedTwoOutputs(), 2).eval()
    acc = disco_accounting(tiny, (2, 3, 16, 16))
    feat = tiny.disco_partition.outputs[0].groups
    assert acc.bytes_per_layer["output.0"] == len(feat[1]) * 16 * 16 * 2 * 4
    assert acc.bytes_per_pair[(1, 0)] >= acc.bytes_per_layer["output.0"]
