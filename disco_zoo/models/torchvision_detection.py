"""torchvision's dense detectors, built with no weight download.

Why torchvision's own classes: the zoo's detectors must be the real architectures, not
forks. FCOS (anchor-free, dense per-pixel heads over an FPN) is built from torchvision's
``FCOS``, ``FCOSHead``, ``AnchorGenerator`` and ``BackboneWithFPN`` on a ResNet-18.
Sized for CPU training and a lean hub, as the DeepLabV3 segmenter is: the pyramid reads
ResNet-18's C3 and C4 (layers 1-3, strides 8 and 16; layer4 alone is 8.4M of its 11.2M
weights), with 64 FPN channels and torchvision's 4-conv heads, 3.2M parameters in all. Two
levels fit the embedded canvases: digits are 26-58 pixels, and FCOS gives P3 the objects
within 64 pixels of a location (anchor sizes 8 and 16 = the strides, torchvision's rule).
The backbone is declared in ``pretrained_cfg["backbone"]`` so ``train --init-backbone``
starts it from a classifier (the zoo's ``resnet18.digits``), as torchvision's
``weights_backbone`` does.

The model's own transform normalises (ImageNet mean/std) and resizes; ``min_size`` =
``max_size`` = the canvas side so the embedded 128-pixel canvases are taken as they are, not
upscaled to 800; accounted, timed or run at another size (640 for deployment) the model is
configured for that size (``StagedFCOS.preprocess_at_size``), not resized back to its canvas.
Models take [0, 1] images, so the config's mean/std are 0/1. In train mode with
targets a model returns its losses; in eval mode, a list of ``{boxes, labels, scores}``.

The model is :class:`~disco_zoo.models.staged_fcos.StagedFCOS`, FCOS with its forward in
stages (transform | backbone + FPN + heads | anchors, decoding, NMS), so DISCO splits the
middle and the ends run on the root. The ``_disco_Nnode`` variants are the dense model
converted by the generic graph adapter (``to_disco``), heads shared across the pyramid
levels keeping one split.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_fcos_resnet18_fpn", "DETECTION_INPUT_SIZE", "DEFAULT_NUM_CLASSES"]

_MODULE = "disco_zoo.models.torchvision_detection"
DETECTION_INPUT_SIZE = (3, 128, 128)  # the embedded digit boxes' size
DEFAULT_NUM_CLASSES = 11  # background + the ten digits of the embedded canvases


def _describe(model: Any, num_classes: int, side: int, backbone: str | None = None) -> Any:
    """The data-config keys timm models carry (as :func:`build_torchvision` sets them), and
    where the backbone a classifier's weights can start lives."""
    model.pretrained_cfg = {"input_size": (3, side, side), "fixed_input_size": False, "num_classes": num_classes,
                            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                            **({"backbone": backbone} if backbone else {})}
    return model


def build_fcos_resnet18_fpn(num_classes: int = DEFAULT_NUM_CLASSES, min_size: int = DETECTION_INPUT_SIZE[1],
                            max_size: int = DETECTION_INPUT_SIZE[2], fpn_channels: int = 64, head_convs: int = 4,
                            **kwargs: Any) -> Any:
    """torchvision FCOS on ResNet-18 C3-C4 (P3-P4, ``fpn_channels`` channels, ``head_convs``
    convs per head tower), random weights, BatchNorm trainable (no pretrained statistics
    to freeze)."""
    from torchvision.models import resnet18
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead

    from disco_zoo.models.staged_fcos import StagedFCOS

    # _resnet_fpn_extractor's layers (C3: layer2, C4: layer3), with no extra pyramid level:
    # BackboneWithFPN's default adds a max-pooled P5, to which no canvas object is assigned
    backbone = BackboneWithFPN(resnet18(weights=None), {"layer2": "0", "layer3": "1"}, [128, 256], fpn_channels)
    backbone.fpn.extra_blocks = None
    anchors = AnchorGenerator(((8,), (16,)), ((1.0,),) * 2)
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs)
    model = StagedFCOS(backbone, num_classes, min_size=min_size, max_size=max_size, anchor_generator=anchors,
                       head=head, **kwargs)
    return _describe(model, num_classes, min_size, backbone="backbone.body")


_DENSE = (
    ("fcos_resnet18_fpn", "build_fcos_resnet18_fpn", "torchvision FCOS on a ResNet-18 FPN (C3-C4, P3-P4, 64 channels)"),
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
