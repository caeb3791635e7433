"""The dense weight format: one ``model.safetensors`` beside ``config.json``; and the
weights a run starts from (``--init``).

Folders are written through :func:`disco_zoo.store.write_folder_atomically`, so a crash
leaves either the old folder or the new one. DISCO models use the per-node shard format
instead (:mod:`disco_zoo.disco.shards`); :mod:`disco_zoo.hub` picks the format by the
config's ``kind``.

Starting weights (:func:`read_checkpoint`, :func:`load_pretrained_state`) come from a
dense disco-zoo folder or from a timm checkpoint: a safetensors file of a state dict
(``save_file(model.state_dict(), ...)``) or a timm / Hugging Face folder with
``model.safetensors`` (``timm.models.save_for_hf``). As timm's ``load_pretrained``
does, a checkpoint whose classifier has another number of classes leaves the model's
freshly initialised head in place; every other difference is an error naming the tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import build_model
from disco_zoo.store import (CONFIG_NAME, FolderConfig, load_folder_config, read_config, sha256_file, verify_folder,
                             write_folder_atomically)
from disco_zoo.weight_storage import check_storage_dtype, compute_tensors, stored_tensors

__all__ = ["DENSE_FILE", "save_dense", "load_dense", "load_strict", "Checkpoint",
           "read_checkpoint", "classifier_names", "load_pretrained_state", "load_backbone_state"]

DENSE_FILE = "model.safetensors"


def save_dense(model: Any, folder: Path, config: dict[str, Any], storage: str = "fp32") -> Path:
    """Save a dense model's state dict, stored as ``storage`` (:mod:`disco_zoo.weight_storage`), with its config."""
    from safetensors.torch import save_file

    check_storage_dtype(storage)

    def write(tmp: Path) -> dict[str, Any]:
        state = {name: stored.contiguous() for key, value in model.state_dict().items()
                 for name, stored in stored_tensors(key, value, storage).items()}
        save_file(state, str(tmp / DENSE_FILE))
        return {**config, "kind": "dense", "storage_dtype": storage}

    return write_folder_atomically(folder, write)


def load_dense(folder: Path, config: FolderConfig, **kwargs: Any) -> Any:
    """Build ``config.arch`` with its args (``kwargs`` override) and load ``model.safetensors`` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = build_model(config.arch, **{**config.args, **kwargs})
    try:
        state = compute_tensors(load_file(str(Path(folder) / DENSE_FILE)))
    except (SafetensorError, OSError) as err:
        raise DiscoZooError(f"{Path(folder) / DENSE_FILE} is not a readable safetensors file ({err}).") from None
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    load_strict(model, state, folder)
    return model.eval()


def load_strict(model: Any, state: dict[str, Any], folder: Path) -> None:
    """``load_state_dict(strict=True)`` with a mismatch reported as one clear error."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DiscoZooError(f"weights in {folder} do not fit the architecture in its config.json: {first}") from None


# -- starting weights (--init) --------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A state dict to start from, and what its source says about it."""

    source: Path  # the file or folder named
    weights_file: Path
    state: dict[str, Any] = field(repr=False)
    config: FolderConfig | None = None  # a disco-zoo dense folder's config; None for a timm checkpoint
    timm_architecture: str | None = None  # a timm folder's config.json "architecture"
    class_names: tuple[str, ...] | None = None  # the classes its head was trained on, when recorded

    @property
    def args(self) -> dict[str, Any]:
        """Builder arguments the weights were made with (a disco-zoo folder records them)."""
        return dict(self.config.args) if self.config is not None else {}

    def provenance(self) -> dict[str, Any]:
        """What a written config records about where its starting weights came from."""
        return {"source": str(self.source), "sha256": sha256_file(self.weights_file),
                **({"model": self.config.name} if self.config is not None else {}),
                **({"timm_architecture": self.timm_architecture} if self.timm_architecture else {})}


def _read_safetensors(path: Path, option: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return compute_tensors(load_file(str(path)))
    except (SafetensorError, OSError) as err:
        raise DiscoZooError(f"{option}: {path} is not a readable safetensors file ({err}); disco-zoo reads "
                            "safetensors only (never pickle): save a state dict with safetensors.torch.save_file.") from None


def _timm_folder_config(raw: dict[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    """(architecture, label names) from a timm/HF folder's config.json (timm's
    ``save_for_hf`` writes both keys; either may be absent)."""
    cfg = raw.get("pretrained_cfg") if isinstance(raw.get("pretrained_cfg"), dict) else {}
    labels = raw.get("label_names", cfg.get("label_names"))
    labels = tuple(labels) if isinstance(labels, list) and all(isinstance(n, str) for n in labels) else None
    architecture = raw.get("architecture")
    return (architecture if isinstance(architecture, str) else None), labels


def read_checkpoint(path: Path, option: str = "--init") -> Checkpoint:
    """The weights at ``path``: a dense disco-zoo folder (sha256-checked), a timm/HF folder
    holding ``model.safetensors``, or a safetensors file."""
    path = Path(path)
    if path.is_file():
        return Checkpoint(path, path, _read_safetensors(path, option))
    if not path.is_dir():
        raise DiscoZooError(f"{option}: {path} does not exist; give a safetensors file, a folder holding "
                            f"{DENSE_FILE}, or a disco-zoo model folder or name.")
    raw = read_config(path) if (path / CONFIG_NAME).is_file() else {}
    if "arch" in raw or "kind" in raw:  # a disco-zoo folder; timm's config.json says "architecture"
        config = load_folder_config(path)
        if config.kind != "dense":
            raise DiscoZooError(f"{option} {path}: expected a dense model folder (kind 'dense'), got kind {config.kind!r}")
        verify_folder(path, config)
        weights = path / DENSE_FILE
        return Checkpoint(path, weights, _read_safetensors(weights, option), config=config,
                          class_names=config.class_names)
    weights = path / DENSE_FILE
    if not weights.is_file():
        raise DiscoZooError(f"{option}: {path} holds no {DENSE_FILE} (nor a disco-zoo {CONFIG_NAME}); give a "
                            "safetensors file, a timm/Hugging Face folder with model.safetensors, or a disco-zoo folder.")
    architecture, labels = _timm_folder_config(raw)
    return Checkpoint(path, weights, _read_safetensors(weights, option), timm_architecture=architecture,
                      class_names=labels)


def classifier_names(model: Any) -> tuple[str, ...]:
    """The model's classifier modules: what its ``pretrained_cfg['classifier']`` names (as
    timm records it), else its last Linear layer (the head of a torchvision classifier)."""
    from torch import nn

    cfg = getattr(model, "pretrained_cfg", None)
    named = cfg.get("classifier") if hasattr(cfg, "get") else None
    if isinstance(named, str):
        named = (named,)
    modules = dict(model.named_modules())
    if named and all(isinstance(n, str) and n in modules for n in named):
        return tuple(named)
    linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    return (linear[-1],) if linear else ()


def _shape(tensor: Any) -> list[int]:
    return list(tensor.shape)


def _few(keys: list[str], shown: int = 4) -> str:
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def load_pretrained_state(model: Any, checkpoint: Checkpoint, class_names: tuple[str, ...] | None = None,
                          option: str = "--init") -> str | None:
    """Load ``checkpoint`` into ``model`` (built for the data's classes).

    The classifier is kept from the model's own initialisation when the checkpoint's has
    another number of outputs, or (when both are known) other class names; the note
    saying so is returned. Any other missing, unexpected or differently shaped tensor is
    a :class:`DiscoZooError` naming it (and both shapes).
    """
    reference = model.state_dict()
    state = dict(checkpoint.state)
    where = f"{option} {checkpoint.source}"
    head = classifier_names(model)
    head_keys = [k for name in head for k in (f"{name}.weight", f"{name}.bias") if k in reference]
    resized = [k for k in head_keys if k in state and state[k].dim() == reference[k].dim()
               and state[k].shape[0] != reference[k].shape[0] and state[k].shape[1:] == reference[k].shape[1:]]
    other_classes = (class_names is not None and checkpoint.class_names is not None
                     and list(class_names) != list(checkpoint.class_names))
    note = None
    if resized or other_classes:
        old = state[resized[0]].shape[0] if resized else len(checkpoint.class_names or ())
        new = reference[head_keys[0]].shape[0] if head_keys else len(class_names or ())
        why = (f"{old} classes in the checkpoint, {new} in the data" if resized
               else "the checkpoint's class names are not the data's")
        for key in head_keys:
            state.pop(key, None)
        note = f"{where}: re-initialised the classifier {', '.join(head)} ({why}); every other tensor loaded."
    mismatched = [k for k in state if k in reference and state[k].shape != reference[k].shape]
    if mismatched:
        key = mismatched[0]
        raise DiscoZooError(f"{where}: tensor {key!r} has shape {_shape(state[key])} in the checkpoint but "
                            f"{_shape(reference[key])} in the model ({len(mismatched)} tensor(s) differ); build the "
                            "architecture it was saved from (MODEL and --arg KEY=VALUE).")
    missing = [k for k in reference if k not in state and (note is None or k not in head_keys)]
    unexpected = [k for k in state if k not in reference]
    if missing or unexpected:
        parts = ([f"missing {len(missing)} tensor(s) the model has: {_few(missing)}"] if missing else []) + (
            [f"{len(unexpected)} tensor(s) the model lacks: {_few(unexpected)}"] if unexpected else [])
        raise DiscoZooError(f"{where} does not fit the architecture: {'; '.join(parts)}.")
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=False)
    return note


def load_backbone_state(model: Any, checkpoint: Checkpoint, option: str = "--init-backbone") -> str:
    """Start ``model``'s backbone from a classifier's weights (torchvision's ``weights_backbone``).

    Why: a detector trained from scratch on a CPU learns slowly; its backbone is a
    classifier's trunk, and the zoo's classifiers are trained. The model names its backbone
    module in ``pretrained_cfg["backbone"]`` (a dotted path), so nothing here knows a
    family; a model whose backbone regroups the classifier's layers (SSDlite cuts a
    MobileNetV3 block in two) also gives ``classifier_trunk()``, the same modules in the
    classifier's layout. The trunk may sit under a prefix in the checkpoint (``features.``
    in a MobileNetV3 classifier, ``backbone.`` in a segmenter built on one), found by
    where the trunk's tensors are. Every backbone tensor must come from the checkpoint with
    its shape; the checkpoint's other tensors (its classifier or decoder, stages the
    detector does not use) are left out and counted in the returned note."""
    where = f"{option} {checkpoint.source}"
    path = (getattr(model, "pretrained_cfg", None) or {}).get("backbone")
    if not path:
        raise DiscoZooError(f"{where}: this model declares no backbone (pretrained_cfg['backbone']) to start from a "
                            "classifier; use --init with the model's own weights.")
    backbone = model.classifier_trunk() if hasattr(model, "classifier_trunk") else model.get_submodule(path)
    reference = backbone.state_dict()
    prefix = _trunk_prefix(reference, checkpoint.state)
    state = {k[len(prefix):]: v for k, v in checkpoint.state.items() if k.startswith(prefix)}
    missing = [k for k in reference if k not in state]
    if missing:
        raise DiscoZooError(f"{where} does not hold the backbone {path}: missing {len(missing)} of its "
                            f"{len(reference)} tensor(s): {_few(missing)}; start from the classifier the backbone "
                            "is built from (e.g. resnet18 weights for a ResNet-18 backbone).")
    mismatched = [k for k in reference if state[k].shape != reference[k].shape]
    if mismatched:
        key = mismatched[0]
        raise DiscoZooError(f"{where}: backbone tensor {key!r} has shape {_shape(state[key])} in the checkpoint but "
                            f"{_shape(reference[key])} in {path} ({len(mismatched)} tensor(s) differ); build the "
                            "model with the classifier's architecture (MODEL and --arg KEY=VALUE).")
    backbone.load_state_dict({k: state[k].to(reference[k].dtype) for k in reference}, strict=True)
    unused = len(checkpoint.state) - len(reference)
    under = f" (under {prefix!r})" if prefix else ""
    return (f"{where}: loaded {len(reference)} backbone tensor(s){under} into {path}; {unused} checkpoint "
            "tensor(s) not used.")


def _trunk_prefix(reference: dict[str, Any], state: dict[str, Any]) -> str:
    """The prefix under which ``state`` holds every key of ``reference`` ('' when it holds
    them as they are, or when no prefix holds them all: the caller names what is missing)."""
    if all(k in state for k in reference):
        return ""
    first = next(iter(reference), None)
    candidates = sorted({k[:-len(first)] for k in state if first and k.endswith("." + first)}, key=len)
    return next((p for p in candidates if all(p + k in state for k in reference)), "")
