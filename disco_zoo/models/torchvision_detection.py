"""torchvision's dense detectors, built with no weight download.

Why torchvision's own classes: the zoo's detectors must be the real architectures, not
forks. FCOS (anchor-free, dense per-pixel heads over an FPN) is built from torchvision's
``FCOS`` class on a ResNet-18 FPN (``_resnet_fpn_extractor``, C3-C5 plus P6/P7 from P5,
as torchvision's ``fcos_resnet50_fpn``), which keeps CPU training feasible. The model's
own transform normalises (ImageNet mean/std) and resizes; ``min_size`` = ``max_size`` =
the canvas side so the embedded 128-pixel canvases are taken as they are, not upscaled
to 800; accounted, timed or run at another size (640 for deployment) the model is
configured for that size (``StagedFCOS.preprocess_at_size``), not resized back to its canvas.
Models take [0, 1] images, so the config's mean/std are 0/1. In train mode with
targets a model returns its losses; in eval mode, a list of ``{boxes, labels, scores}``.

The model is :class:`~disco_zoo.models.staged_fcos.StagedFCOS`, FCOS with its forward in
stages (transform | backbone + FPN + heads | anchors, decoding, NMS), so DISCO splits the
middle and the ends run on the root. The ``_disco_Nnode`` variants are the dense model
converted by the generic graph adapter (``to_disco``), heads shared across the five
pyramid levels keeping one split.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_fcos_resnet18_fpn", "DETECTION_INPUT_SIZE", "DEFAULT_NUM_CLASSES"]

_MODULE = "disco_zoo.models.torchvision_detection"
DETECTION_INPUT_SIZE = (3, 128, 128)  # the embedded digit boxes' size
DEFAULT_NUM_CLASSES = 11  # background + the ten digits of the embedded canvases


def _describe(model: Any, num_classes: int, side: int) -> Any:
    """The data-config keys timm models carry (as :func:`build_torchvision` sets them)."""
    model.pretrained_cfg = {"input_size": (3, side, side), "fixed_input_size": False, "num_classes": num_classes,
                            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    return model


def build_fcos_resnet18_fpn(num_classes: int = DEFAULT_NUM_CLASSES, min_size: int = DETECTION_INPUT_SIZE[1],
                            max_size: int = DETECTION_INPUT_SIZE[2], **kwargs: Any) -> Any:
    """torchvision FCOS on a ResNet-18 FPN (P3-P7, 256 channels), random weights,
    BatchNorm trainable (no pretrained statistics to freeze)."""
    from torchvision.models import resnet18
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from disco_zoo.models.staged_fcos import StagedFCOS

    backbone = _resnet_fpn_extractor(resnet18(weights=None), trainable_layers=5, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    model = StagedFCOS(backbone, num_classes, min_size=min_size, max_size=max_size, **kwargs)
    return _describe(model, num_classes, min_size)


_DENSE = (
    ("fcos_resnet18_fpn", "build_fcos_resnet18_fpn", "torchvision FCOS on a ResNet-18 FPN (P3-P7)"),
)

_DISCO_NODES = {"fcos_resnet18_fpn": (2, 4)}  # the DISCO variants of each dense detector

for _arch, _builder, _description in _DENSE:
    register_model(ModelEntry(arch=_arch, builder=f"{_MODULE}:{_builder}", family="torchvision-detection",
                              source="torchvision", description=f"{_description} (dense)", task="detection"))
    for _nodes in _DISCO_NODES.get(_arch, ()):
        register_model(ModelEntry(
            arch=f"{_arch}_disco_{_nodes}node", builder="disco_zoo.models.disco_variants:build_disco",
            family="torchvision-detection", source="disco", kwargs={"dense": _arch, "nodes": _nodes}, task="detection",
            description=f"{_arch} split over {_nodes} nodes with sparse cross-node channels (DISCO): backbone, FPN "
                        "and heads split; transform, box decoding and NMS on the root"))
