"""DISCO variants: a dense timm architecture converted for N nodes (no torch at import).

The ViT and Swin variants are sized for the embedded 32x32 digits (patch 4, window 4);
pass ``img_size`` etc. to override. Weights come from the hub (``pretrained=True``) or
from ``disco-zoo sparsify``.
"""
from __future__ import annotations

from typing import Any, Sequence

from disco_zoo.models.pretrained_tags import DIGITS
from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.disco_variants:build_disco"


def build_disco(timm_name: str, nodes: int, ratios: Sequence[float] | None = None, **kwargs: Any) -> Any:
    """The dense timm model (no pretrained download) converted with :func:`to_disco`, masks open."""
    import timm

    from disco_zoo.disco.adapters import to_disco

    return to_disco(timm.create_model(timm_name, pretrained=False, **kwargs), nodes, ratios)


_VARIANTS: tuple[tuple[str, str, str, int, dict[str, Any]], ...] = (
    ("resnet18_disco_2node", "resnet", "resnet18", 2, {}),
    ("resnet18_disco_4node", "resnet", "resnet18", 4, {}),
    ("resnet50_disco_2node", "resnet", "resnet50", 2, {}),
    ("resnet50_disco_4node", "resnet", "resnet50", 4, {}),
    ("vit_tiny_disco_2node", "vit", "vit_tiny_patch16_224", 2, {"img_size": 32, "patch_size": 8}),
    ("vit_small_disco_2node", "vit", "vit_small_patch16_224", 2, {"img_size": 32, "patch_size": 4}),
    ("swin_tiny_disco_2node", "swin", "swin_tiny_patch4_window7_224", 2, {"img_size": 32, "window_size": 4}),
)

# Variants with weights in hub/ (recipes in eval/recipes.sh).
_PUBLISHED = {
    "resnet18_disco_2node",
    "resnet18_disco_4node",
    "resnet50_disco_2node",
    "resnet50_disco_4node",
    "vit_tiny_disco_2node",
}

for _arch, _family, _timm, _nodes, _extra in _VARIANTS:
    register_model(
        ModelEntry(
            arch=_arch,
            builder=_BUILDER,
            family=_family,
            source="disco",
            kwargs={"timm_name": _timm, "nodes": _nodes, **_extra},
            pretrained=(DIGITS,) if _arch in _PUBLISHED else (),
            description=f"{_timm} split over {_nodes} nodes with sparse cross-node channels (DISCO)",
        )
    )
