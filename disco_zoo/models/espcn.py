"""ESPCN (Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network"), as a plain PyTorch module.

Three convolutions on the low-resolution image, conv5x5 (3 -> 64) tanh, conv3x3
(64 -> 32) tanh, conv3x3 (32 -> 3 r^2), and one ``nn.PixelShuffle(r)``: all the work
happens at LR resolution, which is what makes it the light model of the zoo. It maps
[0, 1] RGB to [0, 1] RGB (mean/std (0, 0, 0)/(1, 1, 1)).
"""
from __future__ import annotations

from typing import Any

from disco_zoo.models.sr_config import with_sr_config
from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_espcn", "TRAIN_PATCH"]

_BUILDER = "disco_zoo.models.espcn:build_espcn"
TRAIN_PATCH = 32  # the LR patch side of the published recipe (eval/recipes.sh): its pretrained_cfg input size


def _model_class() -> Any:
    """The module class, defined on first build so registering the entry needs no torch."""
    import torch
    from torch import nn

    class ESPCN(nn.Module):
        def __init__(self, scale: int = 2, in_chans: int = 3) -> None:
            super().__init__()
            self.scale = scale
            self.conv1 = nn.Conv2d(in_chans, 64, 5, padding=2)
            self.act1 = nn.Tanh()
            self.conv2 = nn.Conv2d(64, 32, 3, padding=1)
            self.act2 = nn.Tanh()
            self.conv3 = nn.Conv2d(32, in_chans * scale * scale, 3, padding=1)
            self.shuffle = nn.PixelShuffle(scale)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shuffle(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x))))))

    return ESPCN


def build_espcn(scale: int = 2, **kwargs: Any) -> Any:
    """An ESPCN with random weights; ``scale`` stays in the builder's args (``config.args``)."""
    from disco_zoo.errors import DiscoZooError

    if not isinstance(scale, int) or scale < 2:
        raise DiscoZooError(f"ESPCN needs an integer scale >= 2, got scale={scale!r}")
    model = _model_class()(scale, **kwargs)
    return with_sr_config(model, TRAIN_PATCH, scale)


register_model(
    ModelEntry(
        arch="espcn_x2",
        builder=_BUILDER,
        family="espcn",
        source="disco",
        kwargs={"scale": 2},
        description="ESPCN x2 super-resolution (Shi et al. 2016; three convs and a pixel shuffle)",
        task="super_resolution",
    )
)
