"""Layer-graph extraction and dense within-layer-parallel accounting."""
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import disco_zoo
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import trace_model
from disco_zoo.graph.accounting import channel_split, dense_tp_traffic


def _flop_counter_total(model, shape):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(shape))
    return counter.get_total_flops()


def test_resnet50_at_224_matches_reference_figures():
    model = disco_zoo.create_model("resnet50")
    graph = trace_model(model, (1, 3, 224, 224))
    assert graph.total_params == 25_557_032
    assert sum(layer.params for layer in graph) == 25_557_032
    assert graph.total_flops == _flop_counter_total(model, (1, 3, 224, 224))
    adds = graph.of_op("add")
    assert len(adds) == 16
    assert all(len(add.predecessors) == 2 for add in adds)
    assert len(graph.of_op("conv", "linear")) == 54


@pytest.mark.parametrize(
    "name, kwargs, size",
    [
        ("resnet18", {}, 32),
        ("resnet50", {}, 32),
        ("vit_small_patch16_224", {"img_size": 32, "patch_size": 8}, 32),
        ("swin_tiny_patch4_window7_224", {"img_size": 56, "window_size": 7}, 56),
        ("googlenet", {}, 64),
        ("densenet121", {}, 64),
        ("mobilenet_v2", {}, 32),
    ],
)
def test_every_registered_dense_model_traces(name, kwargs, size):
    model = disco_zoo.create_model(name, **kwargs)
    graph = trace_model(model, (1, 3, size, size))
    assert graph.total_flops == _flop_counter_total(model, (1, 3, size, size))
    assert graph.total_params == sum(p.numel() for p in model.parameters())
    convs = graph.of_op("conv", "linear")
    assert convs and all(layer.flops > 0 for layer in convs)
    # The DAG is consistent: every edge is recorded on both ends.
    for layer in graph:
        for pred in layer.predecessors:
            assert layer.name in graph[pred].successors
    output = graph.of_op("output")[0]
    assert output.output_shape == (1, 1000)


def test_googlenet_inception_concats_have_four_branches():
    graph = trace_model(disco_zoo.create_model("googlenet"), (1, 3, 64, 64))
    concats = graph.of_op("concat")
    assert len(concats) == 9  # inception 3a,3b,4a-4e,5a,5b
    assert all(len(c.predecessors) == 4 for c in concats)
    # Each branch is a different conv path: four distinct predecessors.
    assert all(len(set(c.predecessors)) == 4 for c in concats)


def test_densenet121_concat_fan_in_grows_within_blocks():
    graph = trace_model(disco_zoo.create_model("densenet121"), (1, 3, 64, 64))
    fan_in = [len(c.predecessors) for c in graph.of_op("concat")]
    # Dense blocks of 6, 12, 24, 16 layers: layer i of a block concatenates i inputs,
    # and the block output concatenates all of them (i = n + 1).
    expected = []
    for block in (6, 12, 24, 16):
        expected += list(range(1, block + 1)) + [block + 1]
    assert fan_in == expected


class TinyNet(nn.Module):
    """conv(3->4, 3x3) -> relu -> depthwise conv(4, 3x3) -> add residual -> pool -> linear(4->6)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + self.dw(y)
        return self.fc(torch.flatten(self.pool(y), 1))


def test_dense_tp_traffic_on_hand_worked_net():
    graph = trace_model(TinyNet(), (1, 3, 8, 8), dtype_bytes=4)
    # 2 nodes, input channels split [2, 1] for the image, [2, 2] for 4 channels.
    # conv: node 0 receives node 1's 1 channel, node 1 receives node 0's 2 -> 3 * 64 px * 4 B = 768.
    # dw (groups=4): every output reads only its own channel -> 0 bytes.
    # fc: input (1, 4): each node receives the other's 2 features -> 4 * 1 * 4 B = 16.
    traffic = dense_tp_traffic(graph, nodes=2)
    assert traffic.per_layer == {"conv": 768, "dw": 0, "fc": 16}
    assert traffic.total == 784
    assert traffic.per_pair == {(1, 0): 64 * 4 + 8, (0, 1): 2 * 64 * 4 + 8}
    # fp16 halves it; 4 nodes: conv image split [1,1,1,0]: each of 3 owners' channel goes
    # to 3 other nodes = 9 ch; fc split [1,1,1,1]: 4 nodes x 3 features = 12.
    assert dense_tp_traffic(graph, nodes=2, dtype_bytes=2).total == 392
    four = dense_tp_traffic(graph, nodes=4)
    assert four.per_layer == {"conv": 9 * 64 * 4, "dw": 0, "fc": 12 * 4}


def test_channel_split_equal_and_unequal():
    assert channel_split(64, 2) == [32, 32]
    assert channel_split(3, 2) == [2, 1]
    assert channel_split(10, 2, ratios=(0.6, 0.4)) == [6, 4]
    assert sum(channel_split(1000, 8, ratios=[1, 2, 3, 4, 5, 6, 7, 8])) == 1000
    with pytest.raises(DiscoZooError, match="ratios"):
        channel_split(10, 2, ratios=(1.0,))


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(DiscoZooError, match="input_shape"):
        trace_model(TinyNet(), (3, 8, 8))
