"""Per-node computation from shard tensors equals the masked model, layer by layer."""
import random

import timm
import torch

from disco_zoo.disco.adapters import apply_partition, to_disco
from disco_zoo.disco.node import node_forward, node_input
from disco_zoo.disco.shards import load_node_shard, save_shards


def _pruned_resnet(nodes):
    torch.manual_seed(0)
    model = to_disco(timm.create_model("resnet18", num_classes=10).eval(), nodes, None)
    part = model.disco_partition
    rng = random.Random(1)
    for layer in part.layers.values():
        layer.selected = [[sorted(c for c in s if rng.random() < 0.3) for s in row] for row in layer.selected]
        if layer.mode == "split":
            layer.dropped = [sorted(c for c in own if rng.random() < 0.1) for own in layer.in_groups]
    apply_partition(model, part)
    return model


def test_nodes_reproduce_masked_layers_from_their_shards(tmp_path):
    nodes = 3
    model = _pruned_resnet(nodes)
    save_shards(model, tmp_path / "m")
    shards = [load_node_shard(tmp_path / "m", k)[1] for k in range(nodes)]
    modules = dict(model.named_modules())
    part = model.disco_partition
    for name in ("conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2"):
        layer, module = part.layers[name], modules[name]
        x = torch.randn(1, layer.in_channels, 9, 9)
        with torch.no_grad():
            full = module(x)
            for k in range(nodes):
                received = {j: x[:, layer.selected[k][j]] for j in range(nodes) if j != k}
                xk = node_input(layer, k, x[:, layer.in_groups[k]], received, dim=1)
                yk = node_forward(module, layer, k, xk, shards[k][f"{name}.weight"], shards[k].get(f"{name}.bias"))
                assert torch.allclose(yk, full[:, layer.out_groups[k]], atol=1e-5), (name, k)
    # the classifier: partial products summed on root equal the full logits
    fc, module = part.layers["fc"], modules["fc"]
    x = torch.randn(2, fc.in_channels)
    with torch.no_grad():
        partials = [
            node_forward(module, fc, k, node_input(fc, k, x[:, fc.in_groups[k]], {}, dim=1),
                         shards[k]["fc.weight"], shards[k].get("fc.bias"))
            for k in range(nodes)
        ]
        assert torch.allclose(sum(partials), module(x), atol=1e-5)
