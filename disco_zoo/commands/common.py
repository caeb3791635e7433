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


def storage_check(model: Any, loader: Any, reference_top1: float) -> bool:
    """True when fp16 storage (weights rounded to fp16, computed in fp32) keeps top-1 unchanged."""
    import copy

    import torch

    from disco_zoo.train import accuracy

    rounded = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in rounded.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return accuracy(rounded, loader) == reference_top1
