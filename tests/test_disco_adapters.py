"""Family adapters: masks open = the dense model; masks closed = block-diagonal."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from disco_zoo.disco.adapters import apply_partition, build_partition, to_disco
from disco_zoo.disco.masked import MaskedConv2d, MaskedLinear
from disco_zoo.errors import DiscoZooError

TINY = {
    "resnet18": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 64, "num_heads": 4, "depth": 2}),
    "swin": (
        "swin_tiny_patch4_window7_224",
        {"img_size": 32, "window_size": 4, "embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (4, 4, 4, 4)},
    ),
}


def tiny(family: str) -> nn.Module:
    torch.manual_seed(0)
    name, kwargs = TINY[family]
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (2, (0.6, 0.4))])
def test_masks_open_equal_dense(family, nodes, ratios):
    dense = tiny(family)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = dense(x)
        disco = to_disco(copy.deepcopy(dense), nodes, ratios).eval()
        out = disco(x)
    assert (out - ref).abs().max().item() <= 1e-5
    part = disco.disco_partition
    masked = [m for m in disco.modules() if isinstance(m, (MaskedConv2d, MaskedLinear))]
    plain = [m for m in disco.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert len(masked) == len(part.layers) and not plain
    # state dict keys and shapes are timm's: dense checkpoints load as they are
    assert {k: v.shape for k, v in disco.state_dict().items()} == {k: v.shape for k, v in dense.state_dict().items()}
    with torch.no_grad():  # closing the masks changes the output (the test can fail)
        closed = apply_partition(disco, part.with_all_closed())(x)
    assert (closed - ref).abs().max().item() > 1e-3


def _explicit_block_diagonal_sequential(net, part, x):
    """Each node runs its own slice of the net on its own channels; partial logits are summed."""
    logits = 0
    for k in range(part.nodes):
        h = x[:, part.layers["0"].in_groups[k]]
        for i, module in enumerate(net):
            name = str(i)
            if isinstance(module, nn.Conv2d):
                lay = part.layers[name]
                w = module.weight[lay.out_groups[k]][:, lay.in_groups[k]]
                # a node may hold no image channel (3 channels, 4 nodes): add one zero channel
                h = torch.cat([h, h.new_zeros(h.shape[0], 1, *h.shape[2:])], 1)
                w = torch.cat([w, w.new_zeros(w.shape[0], 1, *w.shape[2:])], 1)
                h = F.conv2d(h, w, module.bias[lay.out_groups[k]], module.stride, module.padding)
            elif isinstance(module, nn.BatchNorm2d):
                idx = part.tensors[f"{name}.weight"].groups[k]
                h = F.batch_norm(h, module.running_mean[idx], module.running_var[idx], module.weight[idx],
                                 module.bias[idx], False, 0.0, module.eps)
            elif isinstance(module, nn.Linear):
                lay = part.layers[name]
                h = F.linear(h, module.weight[:, lay.in_groups[k]])
            else:
                h = module(h)
        logits = logits + h
    return logits + net[-1].bias


@pytest.mark.parametrize("nodes, ratios", [(2, None), (4, None), (3, (0.5, 0.3, 0.2))])
def test_masks_closed_is_explicit_block_diagonal(nodes, ratios):
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
        nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 3, 8, 8)
    disco = to_disco(copy.deepcopy(net), nodes, ratios)
    part = disco.disco_partition.with_all_closed()
    apply_partition(disco, part)
    with torch.no_grad():
        out = disco(x)
        expected = _explicit_block_diagonal_sequential(net, part, x)
        dense = net(x)
    assert (out - expected).abs().max().item() <= 1e-5
    assert (out - dense).abs().max().item() > 1e-3


def test_resnet_closed_nodes_are_independent():
    """Masks closed: node 0's features never see node 1's image channel."""
    model = to_disco(tiny("resnet18"), 2)
    apply_partition(model, model.disco_partition.with_all_closed())
    x = torch.randn(1, 3, 32, 32)
    y = x.clone()
    y[:, 2] += 1.0  # image channel 2 belongs to node 1
    own = model.disco_partition.layers["fc"].in_groups[0]
    with torch.no_grad():
        fx, fy = model.forward_features(x), model.forward_features(y)
    assert torch.equal(fx[:, own], fy[:, own])
    assert not torch.equal(fx, fy)


@pytest.mark.parametrize("family", ["vit", "swin"])
def test_transformer_closed_qkv_is_block_diagonal(family):
    model = to_disco(tiny(family), 2)
    part = model.disco_partition.with_all_closed()
    apply_partition(model, part)
    name = "blocks.0.attn.qkv" if family == "vit" else "layers.1.blocks.0.attn.qkv"
    layer, module = part.layers[name], dict(model.named_modules())[name]
    x = torch.randn(3, module.in_features)
    expected = torch.zeros(3, module.out_features)
    for k in range(2):
        rows, cols = layer.out_groups[k], layer.in_groups[k]
        expected[:, rows] = x[:, cols] @ module.weight[rows][:, cols].T + module.bias[rows]
    with torch.no_grad():
        assert (module(x) - expected).abs().max().item() <= 1e-5
    # whole heads per node: q, k and v rows of a head sit on the same node
    dim = module.in_features
    assert layer.out_groups[0] == [s * dim + c for s in range(3) for c in layer.in_groups[0]]


def test_unsupported_architecture_is_a_clear_error():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

    with pytest.raises(DiscoZooError, match="no DISCO adapter for Odd"):
        to_disco(Odd(), 2)
    with pytest.raises(DiscoZooError, match="LocalResponseNorm.*has no DISCO rule"):  # mixes neighbour channels
        to_disco(nn.Sequential(nn.Conv2d(3, 4, 3), nn.LocalResponseNorm(2), nn.Conv2d(4, 2, 1)), 2)
    with pytest.raises(DiscoZooError, match="at least 2 nodes"):
        build_partition(nn.Sequential(nn.Conv2d(3, 4, 3)), 1)
    with pytest.raises(DiscoZooError, match="heads cannot be split"):
        to_disco(tiny("vit"), 8)
