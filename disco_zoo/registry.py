"""Model registry: names and lazy builders, nothing else.

Names are ``arch.tag`` (``resnet50_disco_2node.digits``); the CLI form with dashes
(``resnet50-disco-2node``) is accepted too. Builders are declared as import strings
(``"package.module:function"``) so that listing models never imports torch, which
costs ~12 s here. What is published, and everything a pretrained folder says about its
model, lives with the weights (:mod:`disco_zoo.store`, :mod:`disco_zoo.hub`): the
registry is the bottom layer and imports none of them.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError

__all__ = [
    "ModelEntry",
    "UnknownModelError",
    "register_model",
    "unregister_model",
    "list_models",
    "get_entry",
    "build_model",
    "split_name",
    "normalize_name",
]


class UnknownModelError(DiscoZooError, KeyError):
    """An unknown model or tag; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelEntry:
    """One architecture: how to build it, and what kind of task its outputs answer."""

    arch: str
    builder: str  # "module:function", imported only when a model is created
    family: str  # resnet | vit | swin | torchvision-dag | ... (shown to users; never branched on)
    source: str  # timm | torchvision | disco
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    task: str = "classification"  # a task kind of disco_zoo.tasks

    def resolve_builder(self) -> Callable[..., Any]:
        module_name, _, func_name = self.builder.partition(":")
        return getattr(importlib.import_module(module_name), func_name)


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False
# Modules that declare entries; imported on first lookup (they must not import torch).
_ENTRY_MODULES = (
    "disco_zoo.models.timm_dense",
    "disco_zoo.models.torchvision_dense",
    "disco_zoo.models.disco_variants",
    "disco_zoo.models.edsr",
    "disco_zoo.models.espcn",
    "disco_zoo.models.torchvision_segmentation",
    "disco_zoo.models.torchvision_detection",
)


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an entry; a second entry under the same name is a programming error."""
    if entry.arch in _REGISTRY and _REGISTRY[entry.arch] != entry:
        raise ValueError(f"model {entry.arch!r} is registered twice")
    _REGISTRY[entry.arch] = entry
    return entry


def unregister_model(arch: str) -> None:
    """Remove an entry (for plug-ins that register temporarily, and tests that clean up)."""
    _REGISTRY.pop(arch, None)


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in _ENTRY_MODULES:
            importlib.import_module(module)


def normalize_name(name: str) -> str:
    """CLI spelling to registry spelling: dashes become underscores, case folded."""
    return name.strip().replace("-", "_").lower()


def split_name(name: str) -> tuple[str, str]:
    """``arch.tag`` -> (arch, tag); the tag is '' when absent."""
    arch, _, tag = normalize_name(name).partition(".")
    return arch, tag


def list_models(pattern: str = "*") -> list[str]:
    """Sorted architecture names matching an fnmatch pattern (published weights: :func:`disco_zoo.hub.list_pretrained`)."""
    _ensure_loaded()
    pattern = normalize_name(pattern) if pattern else "*"
    return sorted(a for a in _REGISTRY if fnmatch.fnmatchcase(a, pattern))


def get_entry(name: str) -> ModelEntry:
    """The entry for ``name`` (tag ignored); unknown names list close matches."""
    _ensure_loaded()
    arch, _ = split_name(name)
    if arch in _REGISTRY:
        return _REGISTRY[arch]
    close = difflib.get_close_matches(arch, list(_REGISTRY), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}.{hint} Run `disco-zoo list` to see every registered model."
    )


def build_model(name: str, **kwargs: Any) -> Any:
    """Build ``name``'s architecture with untrained weights (the entry's defaults, then
    ``kwargs``). Loading published weights is :func:`disco_zoo.create_model`'s job, one
    layer up: the registry knows names and builders, nothing about files."""
    entry = get_entry(name)
    return entry.resolve_builder()(**{**entry.kwargs, **kwargs})
