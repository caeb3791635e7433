"""EDSR-baseline (Lim et al. 2017, "Enhanced Deep Residual Networks for Single Image
Super-Resolution"), written out as a plain PyTorch module.

The baseline configuration: a 3x3 head conv (3 -> 64), 16 residual blocks
(conv3x3-ReLU-conv3x3, scaled by ``res_scale``, no batch norm), a body-tail conv, a
global skip add around the body, a sub-pixel upsampler (conv3x3 64 -> 64*r^2 then
``nn.PixelShuffle(r)``, once for x2) and a 3x3 tail conv (64 -> 3).

Unlike the reference code there is no ``MeanShift``: the model maps [0, 1] RGB to
[0, 1] RGB, so its folder's mean/std are (0, 0, 0)/(1, 1, 1). A per-channel constant
buffer would be the one op the DISCO graph adapter cannot split across nodes, and the
mean shift buys nothing a trained head bias does not.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.models.sr_config import with_sr_config
from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_edsr", "TRAIN_PATCH"]

_BUILDER = "disco_zoo.models.edsr:build_edsr"
TRAIN_PATCH = 24  # LR patch side of the published recipe (eval/recipes.sh; the paper: 48): pretrained_cfg size


def _model_classes() -> Any:
    """The module classes, defined on first build so registering the entry needs no torch."""
    import torch
    from torch import nn

    def conv3x3(cin: int, cout: int) -> nn.Conv2d:
        return nn.Conv2d(cin, cout, 3, padding=1)

    class ResBlock(nn.Module):
        """conv-ReLU-conv, scaled by ``res_scale`` and added to the input."""

        def __init__(self, channels: int, res_scale: float) -> None:
            super().__init__()
            self.conv1 = conv3x3(channels, channels)
            self.act = nn.ReLU(inplace=True)
            self.conv2 = conv3x3(channels, channels)
            self.res_scale = res_scale  # a Python scalar: no channel-shaped constant in the graph

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv2(self.act(self.conv1(x))) * self.res_scale

    class EDSR(nn.Module):
        def __init__(self, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                     in_chans: int = 3) -> None:
            super().__init__()
            self.scale = scale
            self.head = conv3x3(in_chans, n_feats)
            self.body = nn.Sequential(*(ResBlock(n_feats, res_scale) for _ in range(n_resblocks)))
            self.body_tail = conv3x3(n_feats, n_feats)
            self.upsample = nn.Sequential(conv3x3(n_feats, n_feats * scale * scale), nn.PixelShuffle(scale))
            self.tail = conv3x3(n_feats, in_chans)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            features = self.head(x)
            features = features + self.body_tail(self.body(features))  # the global skip
            return self.tail(self.upsample(features))

    return EDSR


def build_edsr(scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0, **kwargs: Any) -> Any:
    """An EDSR with random weights; ``scale`` stays in the builder's args (``config.args``),
    the one place a folder records it. One pixel shuffle makes x2 or x3 (the paper's x4
    is two x2 shuffles, not built here)."""
    from disco_zoo.errors import DiscoZooError

    if scale not in (2, 3):
        raise DiscoZooError(f"EDSR here builds scale 2 or 3 (one pixel shuffle), got scale={scale!r}")
    model = _model_classes()(scale, n_resblocks, n_feats, res_scale, **kwargs)
    return with_sr_config(model, TRAIN_PATCH, scale)


register_model(
    ModelEntry(
        arch="edsr_baseline_x2",
        builder=_BUILDER,
        family="edsr",
        source="disco",
        kwargs={"scale": 2},
        description="EDSR-baseline x2 super-resolution (Lim et al. 2017; 16 residual blocks, 64 channels)",
        task="super_resolution",
    )
)
