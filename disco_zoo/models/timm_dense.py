"""Dense timm models (the architectures the DISCO variants are made from)."""
from __future__ import annotations

from typing import Any

from disco_zoo.models.pretrained_tags import DIGITS
from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.timm_dense:build_timm"


def build_timm(timm_name: str, **kwargs: Any) -> Any:
    """Create a timm model without pretrained weights (nothing is downloaded)."""
    import timm

    return timm.create_model(timm_name, pretrained=False, **kwargs)


# Architectures with weights published in hub/ (trained on digits) carry the DIGITS tag.
for _arch, _family, _tags in (
    ("resnet18", "resnet", (DIGITS,)),
    ("resnet34", "resnet", ()),
    ("resnet50", "resnet", (DIGITS,)),
    ("resnet101", "resnet", ()),
    ("vit_tiny_patch16_224", "vit", (DIGITS,)),
    ("vit_small_patch16_224", "vit", ()),
    ("vit_base_patch16_224", "vit", ()),
    ("swin_tiny_patch4_window7_224", "swin", ()),
    ("swin_small_patch4_window7_224", "swin", ()),
):
    register_model(
        ModelEntry(
            arch=_arch,
            builder=_BUILDER,
            family=_family,
            source="timm",
            kwargs={"timm_name": _arch},
            pretrained=_tags,
            description=f"timm {_arch} (dense)",
        )
    )
