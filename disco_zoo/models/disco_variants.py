"""DISCO variants: a dense registry architecture converted for N nodes (no torch at import).

``timm_name`` names the dense counterpart in this registry (the eval harness compares
against ``<timm_name>.<tag>``): a timm architecture, or one of the small configurations
in :mod:`disco_zoo.models.timm_dense` such as ``swin_micro_patch2_window4_32``. The ViT
variants are sized for the embedded 32x32 digits (patch 8 or 4); pass ``img_size`` etc.
to override. Weights come from the hub (``pretrained=True``) or from ``disco-zoo sparsify``.
"""
from __future__ import annotations

from typing import Any, Sequence

from disco_zoo.models.pretrained_tags import DIGITS
from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.disco_variants:build_disco"


def build_disco(timm_name: str, nodes: int, ratios: Sequence[float] | None = None, **kwargs: Any) -> Any:
    """The dense registry model ``timm_name`` (its own defaults, then ``kwargs``; nothing is
    downloaded) converted with :func:`to_disco`, masks open."""
    from disco_zoo.disco.adapters import to_disco
    from disco_zoo.registry import create_model

    return to_disco(create_model(timm_name, **kwargs), nodes, ratios)


_VARIANTS: tuple[tuple[str, str, str, int, dict[str, Any]], ...] = (
    ("resnet18_disco_2node", "resnet", "resnet18", 2, {}),
    ("resnet18_disco_4node", "resnet", "resnet18", 4, {}),
    ("resnet50_disco_2node", "resnet", "resnet50", 2, {}),
    ("resnet50_disco_4node", "resnet", "resnet50", 4, {}),
    ("vit_tiny_disco_2node", "vit", "vit_tiny_patch16_224", 2, {"img_size": 32, "patch_size": 8}),
    ("vit_small_disco_2node", "vit", "vit_small_patch16_224", 2, {"img_size": 32, "patch_size": 4}),
    ("swin_micro_disco_2node", "swin", "swin_micro_patch2_window4_32", 2, {}),
)

# Variants with weights in hub/ (recipes in eval/recipes.sh).
_PUBLISHED = {
    "resnet18_disco_2node",
    "resnet18_disco_4node",
    "resnet50_disco_2node",
    "resnet50_disco_4node",
    "vit_tiny_disco_2node",
    "swin_micro_disco_2node",
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
