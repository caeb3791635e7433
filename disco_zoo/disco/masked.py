"""Conv/linear layers whose weight is multiplied by a fixed 0/1 connectivity mask.

In a single process a DISCO layer is the dense layer with the blocks a node does not
receive zeroed: ``mask[o, c] = 1`` when output channel o's node holds or receives input
channel c. Only split and reduce layers are masked: grouped and depthwise convs keep each
group on one node, so they have no cross-node terms to close. The mask is a non-persistent buffer (it is rebuilt from the partition), so
the state dict keeps timm's names and shapes and dense checkpoints load unchanged.
Gradients through ``weight * mask`` are zero on closed entries, so masks stay frozen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from disco_zoo.disco.partition import LayerSplit

__all__ = ["MaskedConv2d", "MaskedLinear", "layer_mask", "to_masked"]


def layer_mask(split: LayerSplit) -> torch.Tensor:
    """The (out, in) 0/1 mask a partition layer implies."""
    mask = torch.zeros(split.out_channels, split.in_channels)
    if split.mode == "reduce":
        return mask.fill_(1.0)
    for k in range(split.nodes):
        rows = torch.tensor(split.out_groups[k], dtype=torch.long)
        cols = torch.tensor(split.columns(k), dtype=torch.long)
        if len(rows) and len(cols):
            mask[rows.unsqueeze(1), cols.unsqueeze(0)] = 1.0
    return mask


class MaskedConv2d(nn.Conv2d):
    """nn.Conv2d with an (out, in) connectivity mask broadcast over the kernel."""

    def set_mask(self, mask: torch.Tensor) -> None:
        self.register_buffer("mask", mask.to(self.weight.device, self.weight.dtype), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class MaskedLinear(nn.Linear):
    """nn.Linear with an (out, in) connectivity mask."""

    def set_mask(self, mask: torch.Tensor) -> None:
        self.register_buffer("mask", mask.to(self.weight.device, self.weight.dtype), persistent=False)

    def masked_weight(self) -> torch.Tensor:
        return self.weight * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


def to_masked(module: nn.Module, split: LayerSplit) -> nn.Module:
    """Turn a plain nn.Conv2d / nn.Linear into its masked twin in place (same parameters)."""
    if type(module) is nn.Conv2d:
        if module.groups != 1:
            raise ValueError(f"{split.name}: a grouped conv is not masked (its groups stay whole on one node); "
                             "the partition lists it under 'grouped', not 'layers'")
        module.__class__ = MaskedConv2d
    elif type(module) is nn.Linear:
        module.__class__ = MaskedLinear
    elif not isinstance(module, (MaskedConv2d, MaskedLinear)):
        raise ValueError(f"{split.name}: expected nn.Conv2d or nn.Linear, got {type(module).__name__}")
    module.set_mask(layer_mask(split))
    return module
