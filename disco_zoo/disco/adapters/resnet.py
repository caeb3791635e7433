"""ResNet (timm BasicBlock / Bottleneck) and plain nn.Sequential nets.

Every tensor with C channels is split into the same contiguous groups, so a block's
output and its shortcut share one channel-to-node map and residual adds stay local.
The classifier is a ``reduce`` layer: each node multiplies its features by its columns
and the partial logits are summed.
"""
from __future__ import annotations

from torch import nn

from disco_zoo.disco.partition import Partition, contiguous_groups
from disco_zoo.errors import DiscoZooError

_LOCAL = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
          nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)


def is_resnet(model: nn.Module) -> bool:
    from timm.models.resnet import ResNet

    return isinstance(model, ResNet)


def is_sequential(model: nn.Module) -> bool:
    return type(model) is nn.Sequential


def _contiguous(model: nn.Module, family: str, nodes: int, ratios: list[float], head: str) -> Partition:
    """Split every conv/linear/BatchNorm by contiguous channel groups; ``head`` reduces."""
    part = Partition(family, nodes, ratios)
    groups = lambda c: contiguous_groups(c, nodes, ratios)  # noqa: E731
    for name, module in model.named_modules():
        if type(module) is nn.Conv2d:
            if module.groups != 1:
                raise DiscoZooError(f"{name}: grouped/depthwise convolutions are not supported by DISCO yet")
            part.add_layer(name, "conv", groups(module.in_channels), groups(module.out_channels))
        elif type(module) is nn.Linear:
            mode = "reduce" if name == head else "split"
            part.add_layer(name, "linear", groups(module.in_features), groups(module.out_features), mode=mode)
        elif isinstance(module, nn.BatchNorm2d):
            for tensor in ("weight", "bias", "running_mean", "running_var"):
                part.add_tensor(f"{name}.{tensor}", 0, groups(module.num_features))
        elif list(module.parameters(recurse=False)):
            raise DiscoZooError(f"{name}: {type(module).__name__} has weights DISCO does not know how to split")
    return part


def resnet_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    from timm.models.resnet import BasicBlock, Bottleneck

    if not isinstance(model.conv1, nn.Conv2d):
        raise DiscoZooError("ResNet with a deep stem is not supported by DISCO yet (plain conv1 only)")
    for name, block in model.named_modules():
        if isinstance(block, (BasicBlock, Bottleneck)) and getattr(block, "se", None) is not None:
            raise DiscoZooError(f"{name}: squeeze-excitation blocks are not supported by DISCO yet")
    head = _name_of(model, model.get_classifier())
    part = _contiguous(model, "resnet", nodes, ratios, head)
    # the invariant that keeps residual adds local: block output map == shortcut map
    for name, block in model.named_modules():
        if isinstance(block, (BasicBlock, Bottleneck)):
            last = part.layers[f"{name}.conv3" if isinstance(block, Bottleneck) else f"{name}.conv2"]
            if block.downsample is not None:
                convs = [n for n, m in block.downsample.named_modules() if isinstance(m, nn.Conv2d)]
                short = part.layers[f"{name}.downsample.{convs[0]}"].out_groups
            else:
                short = part.layers[f"{name}.conv1"].in_groups
            assert last.out_groups == short, f"{name}: residual operands on different maps"
    return part


def sequential_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    """A chain of conv/bn/act/pool/flatten/linear; the last linear is the head."""
    channels = None
    linears = []
    for i, module in enumerate(model):
        if isinstance(module, nn.Conv2d):
            channels = module.out_channels
        elif isinstance(module, nn.Linear):
            if channels is not None and module.in_features != channels:
                raise DiscoZooError(
                    f"layer {i}: Linear reads {module.in_features} features but {channels} channels arrive; "
                    "pool to 1x1 before flattening so features are channels"
                )
            channels = module.out_features
            linears.append(str(i))
        elif not isinstance(module, (nn.BatchNorm2d, *_LOCAL)):
            raise DiscoZooError(f"layer {i}: {type(module).__name__} is not supported in a DISCO Sequential")
    return _contiguous(model, "sequential", nodes, ratios, head=linears[-1] if linears else "")


def _name_of(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    return ""
