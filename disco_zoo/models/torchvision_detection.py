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

The light detector is SSDlite on MobileNetV3-Large, built as torchvision's
``ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)`` builds it (its
``_mobilenet_extractor``, ``SSDLiteHead`` and ``DefaultBoxGenerator``, the reduced tail
torchvision uses without backbone weights, its [-1, 1] normalisation and post-processing
settings), with the transform's fixed size the canvas side instead of 320. It is
:class:`~disco_zoo.models.staged_ssd.StagedSSD`, in the same three stages (transform |
backbone + extras + heads | default boxes, matching or decoding and NMS).
"""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

__all__ = ["build_fcos_resnet18_fpn", "build_ssdlite_mobilenet_v3_large", "DETECTION_INPUT_SIZE",
           "DEFAULT_NUM_CLASSES"]

_MODULE = "disco_zoo.models.torchvision_detection"
DETECTION_INPUT_SIZE = (3, 128, 128)  # the embedded digit boxes' size
DEFAULT_NUM_CLASSES = 11  # background + the ten digits of the embedded canvases


def _describe(model: Any, num_classes: int, side: int, backbone: str | None = None,
              class_scores: str = "sigmoid") -> Any:
    """The data-config keys timm models carry (as :func:`build_torchvision` sets them),
    where the backbone a classifier's weights can start lives, and how the model scores
    classes (what distillation compares: ``DetectionTask.distillation_divergence``)."""
    model.pretrained_cfg = {"input_size": (3, side, side), "fixed_input_size": False, "num_classes": num_classes,
                            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "class_scores": class_scores,
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


def build_ssdlite_mobilenet_v3_large(num_classes: int = DEFAULT_NUM_CLASSES, min_size: int = DETECTION_INPUT_SIZE[1],
                                     max_size: int = DETECTION_INPUT_SIZE[2], reduced_tail: bool = True,
                                     **kwargs: Any) -> Any:
    """torchvision SSDlite on MobileNetV3-Large as ``ssdlite320_mobilenet_v3_large`` builds
    it with no weights (torchvision's normal init, every layer trainable), its transform's
    fixed size ``(min_size, max_size)``; ``kwargs`` go to ``SSD`` over torchvision's
    defaults, as there. ``reduced_tail``: torchvision halves the last stage's channels when
    no backbone weights are given and keeps the classifier's when they are; a trunk from
    a full MobileNetV3-Large (the zoo's LR-ASPP segmenter's) needs ``reduced_tail=False``."""
    from functools import partial

    from torch import nn
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor, _normal_init
    from torchvision.models.mobilenetv3 import mobilenet_v3_large

    from disco_zoo.models.staged_ssd import StagedSSD

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    mobilenet = mobilenet_v3_large(weights=None, norm_layer=norm_layer, reduced_tail=reduced_tail)
    _normal_init(mobilenet)  # torchvision's init without backbone weights
    backbone = _mobilenet_extractor(mobilenet, 6, norm_layer)  # 6: no layer frozen (no pretrained weights)
    size = (min_size, max_size)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes, norm_layer)
    defaults = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}  # [0, 1] to [-1, 1], as torchvision
    model = StagedSSD(backbone, anchors, size, num_classes, head=head, **{**defaults, **kwargs})
    return _describe(model, num_classes, min_size, backbone="backbone.features", class_scores="softmax")


# (arch, builder, description, the core DISCO splits)
_DENSE = (
    ("fcos_resnet18_fpn", "build_fcos_resnet18_fpn", "torchvision FCOS on a ResNet-18 FPN (C3-C4, P3-P4, 64 channels)",
     "backbone, FPN and heads"),
    ("ssdlite_mobilenet_v3_large", "build_ssdlite_mobilenet_v3_large",
     "torchvision SSDlite on MobileNetV3-Large (reduced tail, six feature maps, depthwise-separable heads)",
     "backbone, extra layers and heads"),
)

# the DISCO variants of each dense detector
_DISCO_NODES = {"fcos_resnet18_fpn": (2, 4), "ssdlite_mobilenet_v3_large": (2,)}

for _arch, _builder, _description, _core in _DENSE:
    register_model(ModelEntry(arch=_arch, builder=f"{_MODULE}:{_builder}", family="torchvision-detection",
                              source="torchvision", description=f"{_description} (dense)", task="detection"))
    for _nodes in _DISCO_NODES.get(_arch, ()):
        register_model(ModelEntry(
            arch=f"{_arch}_disco_{_nodes}node", builder="disco_zoo.models.disco_variants:build_disco",
            family="torchvision-detection", source="disco", kwargs={"dense": _arch, "nodes": _nodes}, task="detection",
            description=f"{_arch} split over {_nodes} nodes with sparse cross-node channels (DISCO): {_core} "
                        "split; transform, box decoding and NMS on the root"))
