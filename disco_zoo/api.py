"""The public entry points: build or load a model, and the preprocessing it expects.

This is the top of the loading stack (registry <- store <- weight formats <- hub <- here),
in the spirit of ``timm.create_model`` and ``timm.data.create_transform``: a pretrained
model carries its folder's config as ``model.pretrained_cfg``, and :func:`data_config`
and :func:`create_transform` read the preprocessing from it, so nobody guesses a mean,
a std or an input size.
"""
from __future__ import annotations

import os
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.hub import get_pretrained_cfg, load
from disco_zoo.registry import build_model
from disco_zoo.store import FolderConfig

__all__ = ["create_model", "data_config", "create_transform"]


def create_model(
    name: str,
    pretrained: bool = False,
    path: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """Build a model by name, like ``timm.create_model``.

    ``pretrained=True`` loads the published weights of ``arch.tag`` (default tag when none
    is given) through :mod:`disco_zoo.hub`, sha256-checked and strict; extra keyword
    arguments override the builder's defaults (e.g. ``num_classes``).
    """
    if pretrained:
        return load(name, path=path, local_files_only=local_files_only, **kwargs)
    if path is not None:
        raise DiscoZooError("path= only applies with pretrained=True")
    return build_model(name, **kwargs)


def _config_of(model_or_name: Any) -> FolderConfig:
    if isinstance(model_or_name, FolderConfig):
        return model_or_name
    if isinstance(model_or_name, str):
        return get_pretrained_cfg(model_or_name)
    config = getattr(model_or_name, "pretrained_cfg", None)
    if not isinstance(config, FolderConfig):
        raise DiscoZooError(
            f"{type(model_or_name).__name__} carries no disco-zoo pretrained config; load it with "
            "disco_zoo.create_model(name, pretrained=True) or pass the pretrained name."
        )
    return config


def data_config(model_or_name: Any) -> dict[str, Any]:
    """The preprocessing a model expects, with timm's keys (``input_size``, ``mean``,
    ``std``, ``interpolation``, ``crop_pct``, ``crop_mode``): a loaded model, a
    pretrained name or a :class:`~disco_zoo.store.FolderConfig`."""
    config = _config_of(model_or_name)
    return {
        "input_size": tuple(config.input_size),
        "interpolation": config.interpolation,
        "mean": tuple(config.mean),
        "std": tuple(config.std),
        "crop_pct": config.crop_pct,
        "crop_mode": "center",
    }


def create_transform(model_or_name: Any) -> Any:
    """The evaluation transform (PIL image -> normalised tensor) of a model, built by
    timm's ``create_transform`` from :func:`data_config`."""
    from timm.data import create_transform as timm_transform

    return timm_transform(**data_config(model_or_name), is_training=False)
