"""Small helpers shared by CLI commands (argument parsing, data checks)."""
from __future__ import annotations

from typing import Any

from disco_zoo.errors import DiscoZooError


def parse_model_args(pairs: list[str]) -> dict[str, Any]:
    """``["img_size=32", "patch_size=4"]`` -> ``{"img_size": 32, "patch_size": 4}``."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise DiscoZooError(f"--arg expects KEY=VALUE, got {pair!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        parsed[key] = value
    return parsed


def require_digits(data: str) -> None:
    if data != "digits":
        raise DiscoZooError(
            f"--data {data!r}: only the embedded 'digits' set can be trained on here; "
            "ImageFolder paths are supported for evaluation."
        )


def fp16_rounded_top1(model: Any, loader: Any) -> float:
    """Test top-1 of ``model`` with its weights rounded as fp16 storage rounds them (computed in fp32)."""
    import copy

    import torch

    from disco_zoo.train import accuracy
    from disco_zoo.weights import storage_tensor

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(storage_tensor(tensor, half=True).float())
    return accuracy(rounded, loader)


def storage_decision(storage: str, model: Any, loader: Any, metrics: dict[str, float]) -> bool:
    """Whether to store fp16. 'auto': only when fp16 keeps test top-1 unchanged.

    With fp16 storage, ``metrics`` gets the rounded model's test top-1 (what users load)
    and keeps the fp32 figure as ``test_top1_fp32``.
    """
    if storage not in ("auto", "fp16", "fp32"):
        raise DiscoZooError(f"--storage must be auto, fp16 or fp32, got {storage!r}")
    if storage == "fp32":
        return False
    rounded = fp16_rounded_top1(model, loader)
    if storage == "auto" and rounded != metrics["test_top1"]:
        return False
    metrics["test_top1_fp32"] = metrics["test_top1"]
    metrics["test_top1"] = rounded
    return True
