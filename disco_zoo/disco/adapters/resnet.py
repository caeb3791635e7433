"""ResNet (timm BasicBlock / Bottleneck) and plain nn.Sequential nets: the graph adapter.

Why no code of their own: the generic map propagation (:mod:`.graph`) gives every
tensor with C channels contiguous groups, so a block's output and its shortcut share
one channel-to-node map (residual adds stay local) and the classifier is the ``reduce``
head, which is exactly the hand-written split these families had. Only the ``family``
label differs, so their published configs compare equal.
"""
from __future__ import annotations

from torch import nn

from disco_zoo.disco.adapters.graph import graph_partition
from disco_zoo.disco.partition import Partition


def is_resnet(model: nn.Module) -> bool:
    from timm.models.resnet import ResNet

    return isinstance(model, ResNet)


def is_sequential(model: nn.Module) -> bool:
    return type(model) is nn.Sequential


def resnet_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    return graph_partition(model, nodes, ratios, family="resnet")


def sequential_partition(model: nn.Module, nodes: int, ratios: list[float]) -> Partition:
    return graph_partition(model, nodes, ratios, family="sequential")
