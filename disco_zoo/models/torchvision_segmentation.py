"""torchvision's semantic segmentation architectures, built with no weight download.

Why torchvision's own classes: the zoo's segmenters must be the real architectures
(``DeepLabV3`` + ``DeepLabHead`` on a ResNet backbone, LR-ASPP on MobileNetV3-Large),
not forks. DeepLabV3 reads ResNet-18's C4 features (output stride 16), which keeps CPU
training feasible and the weights small. Both return torchvision's ``OrderedDict({"out": logits})``; taking
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


def build_deeplabv3_resnet18(num_classes: int = DEFAULT_NUM_CLASSES, **kwargs: Any) -> Any:
    """DeepLabV3 on ResNet-18's first three stages (its C4 features: 256 channels at
    output stride 16), no auxiliary head.

    Why C4 and not a dilated layer4: torchvision's ``BasicBlock`` refuses dilation, and
    layer4 plus an ASPP over 512 channels is 16M parameters, 31 MB even in fp16, which
    the repository's weights budget (hub/ under 250 MB) cannot hold twice (dense and
    DISCO). Stopping at layer3 gives the same output stride with 5.6M parameters; the
    head is torchvision's own ``DeepLabHead`` (ASPP rates 12/24/36).
    """
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3

    backbone = resnet18(weights=None, **kwargs)
    body = IntermediateLayerGetter(backbone, return_layers={"layer3": "out"})
    return _describe(DeepLabV3(body, DeepLabHead(backbone.layer3[-1].conv2.out_channels, num_classes)), num_classes)


def build_lraspp_mobilenet_v3_large(num_classes: int = DEFAULT_NUM_CLASSES, **kwargs: Any) -> Any:
    """torchvision's LR-ASPP on MobileNetV3-Large (depthwise-heavy), random weights."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    return _describe(model, num_classes)


_DENSE = (
    ("deeplabv3_resnet18", "build_deeplabv3_resnet18", "torchvision DeepLabV3 on ResNet-18 C4 features (layers 1-3, output stride 16)"),
    ("lraspp_mobilenet_v3_large", "build_lraspp_mobilenet_v3_large", "torchvision LR-ASPP, MobileNetV3-Large backbone"),
)

for _arch, _builder, _description in _DENSE:
    register_model(ModelEntry(arch=_arch, builder=f"{_MODULE}:{_builder}", family="torchvision-segmentation",
                              source="torchvision", description=f"{_description} (dense)", task="segmentation"))
    register_model(ModelEntry(
        arch=f"{_arch}_disco_2node", builder="disco_zoo.models.disco_variants:build_disco", family="torchvision-segmentation",
        source="disco", kwargs={"dense": _arch, "nodes": 2}, task="segmentation",
        description=f"{_arch} split over 2 nodes with sparse cross-node channels (DISCO)"))
