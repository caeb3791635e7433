"""Dense torchvision models with rich DAGs (branches, concats) for the EdgeFlow planner."""
from __future__ import annotations

from typing import Any

from disco_zoo.registry import ModelEntry, register_model

_BUILDER = "disco_zoo.models.torchvision_dense:build_torchvision"


def build_torchvision(tv_name: str, **kwargs: Any) -> Any:
    """Create a torchvision classification model with random weights (nothing downloaded)."""
    import torchvision

    if tv_name == "googlenet":
        # Auxiliary heads only exist in training mode; keep the inference graph plain.
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    model = torchvision.models.get_model(tv_name, weights=None, **kwargs)
    # the same data-config keys timm models carry, so callers ask every model alike
    model.pretrained_cfg = {"input_size": (3, 224, 224), "fixed_input_size": False, "num_classes": kwargs.get("num_classes", 1000)}
    return model


for _arch in ("googlenet", "densenet121", "mobilenet_v2"):
    register_model(
        ModelEntry(
            arch=_arch,
            builder=_BUILDER,
            family="torchvision-dag",
            source="torchvision",
            kwargs={"tv_name": _arch},
            description=f"torchvision {_arch} (dense)",
        )
    )
