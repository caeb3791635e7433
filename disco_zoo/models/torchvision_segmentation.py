"""torchvision's semantic segmentation architectures, built with no weight download.

Why torchvision's own classes: the zoo's segmenters must be the real architectures
(``DeepLabV3`` + ``DeepLabHead`` on a ResNet backbone, LR-ASPP on MobileNetV3-Large),
not forks. A ResNet-18 backbone at output stride 16 (dilation in layer4 only) keeps CPU
training feasible. Both return torchvision's ``OrderedDict({"out": logits})``; taking
``"out"`` is the segmentation task's job, not the model's.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_deeplabv3_resnet18", "build_lraspp_mobilenet_v3_large", "SEGMENTATION_INPUT_SIZE"]

_MODULE = "disco_zoo.models.torchvision_segmentation"
SEGMENTATION_INPUT_SIZE = (3, 128, 128)  # the embedded digit canvases' size
DEFAULT_NUM_CLASSES = 11  # background + the ten digits of the embedded canvases


def _describe(model: Any, num_classes: int) -> Any:
    """The data-config keys timm models carry (as :func:`build_torchvision` sets them)."""
    model.pretrained_cfg = {"input_size": SEGMENTATION_INPUT_SIZE, "fixed_input_size": False,
                            "num_classes": num_classes}
    return model


def _dilate_last_stage(backbone: Any) -> Any:
    """``replace_stride_with_dilation=[False, False, True]`` for a ResNet of BasicBlocks.

    torchvision refuses dilation in ``BasicBlock`` (only Bottleneck takes it), so this
    sets on the built modules what ``ResNet._make_layer`` would: layer4's first block
    loses its stride (conv and shortcut) and keeps dilation 1, the later blocks' 3x3
    convs get dilation 2 (padding 2, same size). Output stride 32 -> 16.
    """
    first, *rest = backbone.layer4
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    for block in rest:
        for conv in (block.conv1, block.conv2):
            conv.dilation, conv.padding = (2, 2), (2, 2)
    return backbone


def build_deeplabv3_resnet18(num_classes: int = DEFAULT_NUM_CLASSES, **kwargs: Any) -> Any:
    """DeepLabV3 with a ResNet-18 backbone at output stride 16, no auxiliary head."""
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    backbone = _dilate_last_stage(resnet18(weights=None, **kwargs))
    body = IntermediateLayerGetter(backbone, return_layers={"layer4": "out"})
    return _describe(DeepLabV3(body, DeepLabHead(backbone.fc.in_features, num_classes)), num_classes)


def build_lraspp_mobilenet_v3_large(num_classes: int = DEFAULT_NUM_CLASSES, **kwargs: Any) -> Any:
    """torchvision's LR-ASPP on MobileNetV3-Large (depthwise-heavy), random weights."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    return _describe(model, num_classes)


_DENSE = (
    ("deeplabv3_resnet18", "build_deeplabv3_resnet18", "torchvision DeepLabV3, ResNet-18 backbone (output stride 16)"),
    ("lraspp_mobilenet_v3_large", "build_lraspp_mobilenet_v3_large", "torchvision LR-ASPP, MobileNetV3-Large backbone"),
)

for _arch, _builder, _description in _DENSE:
    register_model(ModelEntry(arch=_arch, builder=f"{_MODULE}:{_builder}", family="torchvision-segmentation",
                              source="torchvision", description=f"{_description} (dense)", task="segmentation"))
    register_model(ModelEntry(
        arch=f"{_arch}_disco_2node", builder="disco_zoo.models.disco_variants:build_disco", family="torchvision-segmentation",
        source="disco", kwargs={"dense": _arch, "nodes": 2}, task="segmentation",
        description=f"{_arch} split over 2 nodes with sparse cross-node channels (DISCO)"))
