"""DISCO accounting against numbers worked out by hand, and against the dense baseline."""
import copy

import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.disco.adapters import apply_partition, to_disco
from disco_zoo.graph import trace_model
from disco_zoo.graph.accounting import dense_tp_traffic


def hand_net() -> nn.Module:
    """conv3x3 3->4, bn, relu, conv1x1 4->4, relu, pool, linear 4->2; input 1x3x4x4, 2 nodes.

    Groups: image [0,1] | [2]; every 4-channel tensor [0,1] | [2,3]; the head reduces on node 0.
    """
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()


SHAPE = (1, 3, 4, 4)


def test_hand_net_masks_open():
    acc = disco_accounting(to_disco(hand_net(), 2), SHAPE, dtype_bytes=4)
    # conv1: node 0 gets image channel 2 (1 x 16 px x 4 B = 64), node 1 gets 0, 1 (128)
    # conv2: each node gets the other's 2 channels: 2 x 16 x 4 = 128 each way
    # head: node 1 sends its 2 partial logits to node 0: 8
    assert acc.bytes_per_pair == {(1, 0): 64 + 128 + 8, (0, 1): 128 + 128}
    assert acc.disco_bytes == 456
    # dense TP: conv1 192, conv2 256, head as a split linear (each node gets 2 features) 16
    assert acc.dense_tp_bytes == 192 + 256 + 16
    assert acc.traffic_ratio == pytest.approx(456 / 464)
    # FLOPs: conv1 2*4*3*9*16 = 3456, conv2 2*4*4*16 = 512, head 2*2*4 = 16; halves per node
    assert acc.flops_dense == 3984
    assert acc.flops_per_node == [1992, 1992]
    assert acc.flops_total == 3984


def test_hand_net_partly_closed():
    model = to_disco(hand_net(), 2)
    part = model.disco_partition.with_all_closed()
    part.layers["3"].selected[0][1] = [3]  # node 0 receives only channel 3 of node 1 in conv2
    apply_partition(model, part)
    acc = disco_accounting(model, SHAPE, dtype_bytes=4)
    assert acc.bytes_per_pair == {(1, 0): 1 * 16 * 4 + 8}
    assert acc.disco_bytes == 72
    assert acc.bytes_per_layer == {"0": 0, "3": 64, "7": 8}
    # node 0: conv1 2 out x 2 in x 9 x 16 x 2 = 1152, conv2 2 x 3 x 16 x 2 = 192, head 2 x 2 x 2 = 8
    # node 1: conv1 2 x 1 x 9 x 16 x 2 = 576, conv2 2 x 2 x 16 x 2 = 128, head 8
    assert acc.flops_per_node == [1352, 712]
    assert acc.flops_total == 2064
    # params: conv1 36 | 18, bn 4 | 4, conv2 6 | 4, head weight 4 | 4, head bias on node 0: 2
    assert acc.params_per_node == [52, 30]
    # peak working set (elements x 4 B): node 0 conv2 (3 + 2 channels) x 16 = 80 -> 320;
    # node 1 conv2 (2 + 2) x 16 = 64 -> 256
    assert acc.act_peak_per_node == [320, 256]
    assert acc.params_bytes_per_node == [52 * 4, 30 * 4]
    # fp16 storage halves the weight matrices only; vectors (bn, head bias) stay fp32:
    # node 0: (36 + 6 + 4) x 2 + (4 + 2) x 4 = 116; node 1: (18 + 4 + 4) x 2 + 4 x 4 = 68
    assert disco_accounting(model, SHAPE, storage_dtype="fp16").params_bytes_per_node == [116, 68]
    # the image lives on rank 0, which sends node 1 its image channel: 16 px x 4 B
    assert acc.input_bytes_per_pair == {(0, 1): 64}
    assert acc.wire_bytes_per_pair == {(1, 0): 72, (0, 1): 64}
    # fp16 activations halve every byte figure
    assert disco_accounting(model, SHAPE, dtype_bytes=2).disco_bytes == 36


def test_flops_match_flop_counter_when_open():
    model = to_disco(timm.create_model("resnet18", num_classes=10).eval(), 2)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    acc = disco_accounting(model, (1, 3, 32, 32))
    assert acc.flops_total == counter.get_total_flops() == acc.flops_dense


def test_vit_closed_traffic_is_norm_statistics_and_partial_logits():
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=64, num_heads=4, depth=2, num_classes=10
    )
    model = to_disco(model, 2)
    apply_partition(model, model.disco_partition.with_all_closed())
    acc = disco_accounting(model, (1, 3, 32, 32))
    tokens = 64 + 1
    norms = 2 * 2 + 1  # norm1, norm2 per block, final norm
    assert acc.disco_bytes == norms * 2 * (2 * tokens * 4) + 10 * 4
    assert acc.traffic_ratio < 0.05


def test_unequal_split_per_node_figures():
    model = to_disco(timm.create_model("resnet18", num_classes=10).eval(), 2, ratios=(0.6, 0.4))
    acc = disco_accounting(model, (1, 3, 32, 32))
    dense = dense_tp_traffic(trace_model(copy.deepcopy(model), (1, 3, 32, 32)), 2, 4, (0.6, 0.4))
    assert acc.dense_tp_bytes == dense.total
    assert acc.flops_per_node[0] > acc.flops_per_node[1]
    assert acc.params_per_node[0] > acc.params_per_node[1]
    assert acc.bytes_per_pair[(1, 0)] < acc.bytes_per_pair[(0, 1)]  # node 1 holds fewer channels


def test_resnet50_224_dense_baseline_matches_graph():
    dense = timm.create_model("resnet50").eval()
    expected = dense_tp_traffic(trace_model(dense, (1, 3, 224, 224)), 2).total
    acc = disco_accounting(to_disco(dense, 2), (1, 3, 224, 224))
    assert acc.dense_tp_bytes == expected
    # masks open, DISCO moves what dense TP moves except the head (partial logits instead of features)
    head = 2 * 1024 * 4 - 1000 * 4
    assert acc.disco_bytes == expected - head
