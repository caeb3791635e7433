"""Per-node compute, from each node's shard alone, equals the masked model, layer by layer.

The per-node compute is the runtime's own (:class:`DiscoSplitLayer`,
:class:`DiscoReduceLayer`, built by ``build_node_model`` from the shard files); the nodes
run in threads of this process over an in-memory backend, so the check covers the shard
format, the partition and the runtime's layers together."""
import random

import torch

from disco_zoo.disco.adapters import apply_partition, to_disco
from disco_zoo.disco.shards import save_shards
from disco_zoo.registry import build_model
from disco_zoo.runtime.disco_executor import DiscoReduceLayer, DiscoSplitLayer, build_node_model
from disco_zoo.runtime.transport import Transport
from helpers import LoopbackBackend, LoopbackHub, run_nodes


def _pruned_resnet(nodes):
    torch.manual_seed(0)
    model = to_disco(build_model("resnet18", num_classes=10).eval(), nodes, None)
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
    folder = save_shards(model, tmp_path / "m", extra={"arch": "resnet18", "args": {"num_classes": 10}})
    hub = LoopbackHub()
    node_models = [build_node_model(folder, Transport(LoopbackBackend(hub, k, nodes), timeout_s=30))[0]
                   for k in range(nodes)]
    modules = dict(model.named_modules())
    part = model.disco_partition
    assert any(any(layer.dropped) for layer in part.layers.values() if layer.mode == "split")
    for name in ("conv1", "layer2.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2"):
        layer, module = part.layers[name], modules[name]
        assert all(isinstance(m.get_submodule(name), DiscoSplitLayer) for m in node_models)
        x = torch.randn(1, layer.in_channels, 9, 9)
        with torch.no_grad():
            full = module(x)
            outs = run_nodes(lambda k: node_models[k].get_submodule(name)(x[:, layer.in_groups[k]]), nodes)
        for k, yk in enumerate(outs):
            assert torch.allclose(yk, full[:, layer.out_groups[k]], atol=1e-5), (name, k)
    # the classifier: partial products summed on the root equal the full logits
    fc, module = part.layers["fc"], modules["fc"]
    assert isinstance(node_models[0].get_submodule("fc"), DiscoReduceLayer)
    x = torch.randn(2, fc.in_channels)
    with torch.no_grad():
        outs = run_nodes(lambda k: node_models[k].get_submodule("fc")(x[:, fc.in_groups[k]]), nodes)
        assert torch.allclose(outs[fc.root], module(x), atol=1e-5)
