"""Model registry: names, lazy builders and pretrained configs.

Names are ``arch.tag`` (``resnet50_disco_2node.digits``); the CLI form with dashes
(``resnet50-disco-2node``) is accepted too. Builders are declared as import strings
(``"package.module:function"``) so that listing models never imports torch, which
costs ~12 s here.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError

__all__ = [
    "PretrainedCfg",
    "ModelEntry",
    "UnknownModelError",
    "register_model",
    "list_models",
    "list_pretrained",
    "get_entry",
    "get_pretrained_cfg",
    "create_model",
    "split_name",
    "normalize_name",
]


class UnknownModelError(DiscoZooError, KeyError):
    """An unknown model or tag; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class PretrainedCfg:
    """What a pretrained tag means: data, preprocessing and the files' location.

    The recorded metrics, files and hashes live in the hub folder's ``config.json``;
    this is the registry's view, enough to find and preprocess for them.
    """

    tag: str
    dataset: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    num_classes: int = 1000
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    hf_hub_id: str = ""
    description: str = ""


@dataclass(frozen=True)
class ModelEntry:
    """One architecture: how to build it and which pretrained tags exist."""

    arch: str
    builder: str  # "module:function", imported only when a model is created
    family: str  # resnet | vit | swin | torchvision-dag | ...
    source: str  # timm | torchvision | disco
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: tuple[PretrainedCfg, ...] = ()
    description: str = ""

    @property
    def default_tag(self) -> str:
        return self.pretrained[0].tag if self.pretrained else ""

    def tags(self) -> list[str]:
        return [cfg.tag for cfg in self.pretrained]

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
)


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an entry; a second entry under the same name is a programming error."""
    if entry.arch in _REGISTRY and _REGISTRY[entry.arch] != entry:
        raise ValueError(f"model {entry.arch!r} is registered twice")
    _REGISTRY[entry.arch] = entry
    return entry


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


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Sorted architecture names matching an fnmatch pattern.

    With ``pretrained=True`` the result lists ``arch.tag`` for every published tag.
    """
    _ensure_loaded()
    pattern = normalize_name(pattern) if pattern else "*"
    if pretrained:
        return list_pretrained(pattern)
    return sorted(a for a in _REGISTRY if fnmatch.fnmatchcase(a, pattern))


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``arch.tag`` names with a pretrained config, matching ``pattern``."""
    _ensure_loaded()
    names = [f"{e.arch}.{t}" for e in _REGISTRY.values() for t in e.tags()]
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern))


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


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """Pretrained config for ``arch.tag`` (default tag when none is given)."""
    entry = get_entry(name)
    _, tag = split_name(name)
    if not entry.pretrained:
        raise UnknownModelError(f"model {entry.arch!r} has no pretrained weights published yet.")
    tag = tag or entry.default_tag
    for cfg in entry.pretrained:
        if cfg.tag == tag:
            return cfg
    raise UnknownModelError(
        f"unknown tag {tag!r} for model {entry.arch!r}; available tags: {', '.join(entry.tags())}."
    )


def create_model(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
    """Build a model by name, like ``timm.create_model``.

    Extra keyword arguments override the entry's defaults (e.g. ``num_classes``).
    ``pretrained=True`` loads the published weights of the tag through :mod:`disco_zoo.hub`.
    """
    entry = get_entry(name)
    if pretrained:
        get_pretrained_cfg(name)  # clear error for unknown tags / unpublished models
        from disco_zoo import hub  # deferred: hub pulls in torch/safetensors

        return hub.load(name, **kwargs)
    builder = entry.resolve_builder()
    return builder(**{**entry.kwargs, **kwargs})
