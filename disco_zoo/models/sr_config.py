"""What every super-resolution model here says about its inputs (no torch at import)."""
from __future__ import annotations

from typing import Any

__all__ = ["with_sr_config"]


def with_sr_config(model: Any, patch: int, scale: int) -> Any:
    """Set the data-config keys timm models carry: LR patches of ``patch`` pixels in training
    (any size at inference), [0, 1] RGB in and out (no normalisation: the models hold no
    per-channel constants), and the upscaling factor."""
    model.pretrained_cfg = {"input_size": (3, patch, patch), "fixed_input_size": False,
                            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "scale": scale}
    return model
