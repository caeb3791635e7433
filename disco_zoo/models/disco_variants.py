"""DISCO variants: a dense registry architecture converted for N nodes (no torch at import).

``dense`` names the dense architecture in this registry that the variant is made from:
a timm architecture, or one of the small configurations in
:mod:`disco_zoo.models.timm_dense` such as ``swin_micro_patch2_window4_32``. The ViT
variants are sized for the embedded 32x32 digits (patch 8 or 4); pass ``img_size`` etc.
to override. Weights come from the hub (``pretrained=True``) or from ``disco-zoo sparsify``;
a published folder names its dense counterpart (with its tag) in its own config.
"""
from __future__ import annotations

from typing import Any, Sequence

from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.disco_variants:build_disco"


def build_disco(dense: str, nodes: int, ratios: Sequence[float] | None = None, **kwargs: Any) -> Any:
    """The dense registry model ``dense`` (its own defaults, then ``kwargs``; nothing is
    downloaded) converted with :func:`to_disco`, masks open."""
    from disco_zoo.disco.adapters import to_disco
    from disco_zoo.registry import build_model

    return to_disco(build_model(dense, **kwargs), nodes, ratios)


_VARIANTS: tuple[tuple[str, str, str, int, dict[str, Any]], ...] = (
    ("resnet18_disco_2node", "resnet", "resnet18", 2, {}),
    ("resnet18_disco_4node", "resnet", "resnet18", 4, {}),
    ("resnet50_disco_2node", "resnet", "resnet50", 2, {}),
    ("resnet50_disco_4node", "resnet", "resnet50", 4, {}),
    ("vit_tiny_disco_2node", "vit", "vit_tiny_patch16_224", 2, {"img_size": 32, "patch_size": 8}),
    ("vit_small_disco_2node", "vit", "vit_small_patch16_224", 2, {"img_size": 32, "patch_size": 4}),
    ("swin_micro_disco_2node", "swin", "swin_micro_patch2_window4_32", 2, {}),
)

# Super-resolution variants: their partition comes from the traced graph (the generic adapter).
_SR_VARIANTS: tuple[tuple[str, str, str, int, dict[str, Any]], ...] = (
    ("edsr_baseline_x2_disco_2node", "edsr", "edsr_baseline_x2", 2, {}),
    ("espcn_x2_disco_2node", "espcn", "espcn_x2", 2, {}),
)

for _variants, _task in ((_VARIANTS, "classification"), (_SR_VARIANTS, "super_resolution")):
    for _arch, _family, _dense, _nodes, _extra in _variants:
        register_model(
            ModelEntry(
                arch=_arch,
                builder=_BUILDER,
                family=_family,
                source="disco",
                kwargs={"dense": _dense, "nodes": _nodes, **_extra},
                description=f"{_dense} split over {_nodes} nodes with sparse cross-node channels (DISCO)",
                task=_task,
            )
        )
