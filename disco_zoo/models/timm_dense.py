"""Dense timm models (the architectures the DISCO variants are made from)."""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.timm_dense:build_timm"


def build_timm(timm_name: str, **kwargs: Any) -> Any:
    """Create a timm model without pretrained weights (nothing is downloaded).

    timm keeps the ImageNet ``input_size`` in ``model.pretrained_cfg`` even when the model
    is built for another ``img_size``; the built model's own size is written back, so
    whoever asks a model its input size (``info``, ``run``) gets the truth.
    """
    import timm

    model = timm.create_model(timm_name, pretrained=False, **kwargs)
    size = kwargs.get("img_size")
    if isinstance(size, int):
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size)}
    return model


for _arch, _family in (
    ("resnet18", "resnet"),
    ("resnet34", "resnet"),
    ("resnet50", "resnet"),
    ("resnet101", "resnet"),
    ("vit_tiny_patch16_224", "vit"),
    ("vit_small_patch16_224", "vit"),
    ("vit_base_patch16_224", "vit"),
    ("swin_tiny_patch4_window7_224", "swin"),
    ("swin_small_patch4_window7_224", "swin"),
):
    register_model(
        ModelEntry(
            arch=_arch,
            builder=_BUILDER,
            family=_family,
            source="timm",
            kwargs={"timm_name": _arch},
            description=f"timm {_arch} (dense)",
        )
    )

# Small configurations of timm architectures, named for what they are: timm's smallest
# Swin (tiny, 28M parameters) is far too big for 32x32 digits and the hub's size budget.
SWIN_MICRO = {
    "timm_name": "swin_tiny_patch4_window7_224",
    "img_size": 32,
    "patch_size": 2,
    "window_size": 4,
    "embed_dim": 48,
    "depths": (2, 2, 2),
    "num_heads": (3, 6, 12),
}

register_model(
    ModelEntry(
        arch="swin_micro_patch2_window4_32",
        builder=_BUILDER,
        family="swin",
        source="timm",
        kwargs=SWIN_MICRO,
        description="timm SwinTransformer for 32x32 inputs: patch 2, window 4, embed 48, depths 2-2-2, "
        "heads 3-6-12 (1.3M parameters; dense)",
    )
)
