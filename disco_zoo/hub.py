"""Pretrained store: find a model's folder, verify every file's sha256, load it strictly.

A folder is ``<arch>.<tag>/`` holding ``config.json`` and safetensors files (one per node
for DISCO models, ``model.safetensors`` for dense ones) plus a ``README.md`` model card:
the same layout is a valid Hugging Face Hub model repository. Resolution order (DESIGN.md):
an explicit path, ``$DISCO_ZOO_HUB``, the repository's ``hub/``, then the Hugging Face cache
or Hub (``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` keeps it to the cache).
Nothing is unpickled; a file whose hash differs from config.json is refused before loading.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import get_entry, get_pretrained_cfg, split_name

__all__ = [
    "HubError",
    "HubIntegrityError",
    "HUB_ENV",
    "REPO_HUB",
    "CONFIG_NAME",
    "folder_name",
    "hf_repo_id",
    "resolve_folder",
    "read_config",
    "verify_folder",
    "sha256_file",
    "load",
]

HUB_ENV = "DISCO_ZOO_HUB"
REPO_HUB = Path(__file__).resolve().parent.parent / "hub"
CONFIG_NAME = "config.json"
HF_ORG = "disco-zoo"


class HubError(DiscoZooError):
    """A pretrained model could not be found."""


class HubIntegrityError(DiscoZooError):
    """A file is missing, has the wrong size or a sha256 that differs from config.json."""


def folder_name(name: str) -> str:
    """``resnet50-disco-2node`` -> ``resnet50_disco_2node.digits`` (default tag filled in)."""
    entry = get_entry(name)
    cfg = get_pretrained_cfg(name)
    return f"{entry.arch}.{cfg.tag}"


def hf_repo_id(name: str) -> str:
    """The Hugging Face Hub repository of a pretrained name (config's hf_hub_id or the org default)."""
    cfg = get_pretrained_cfg(name)
    return cfg.hf_hub_id or f"{HF_ORG}/{folder_name(name)}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _has_config(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


def resolve_folder(name: str, path: str | os.PathLike[str] | None = None, local_files_only: bool = False) -> Path:
    """The folder holding ``name``'s weights, searched in the documented order."""
    wanted = folder_name(name)
    looked: list[str] = []
    if path is not None:
        explicit = Path(path)
        for candidate in (explicit, explicit / wanted):
            if _has_config(candidate):
                return candidate
        raise HubError(f"no {CONFIG_NAME} in {explicit} or {explicit / wanted}: pass the model's folder.")
    env_root = os.environ.get(HUB_ENV)
    roots = ([Path(env_root)] if env_root else []) + [REPO_HUB]
    for root in roots:
        candidate = root / wanted
        looked.append(str(candidate))
        if _has_config(candidate):
            return candidate
    offline = local_files_only or _offline()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=hf_repo_id(name), local_files_only=offline))
    except Exception as err:  # huggingface_hub raises several types for "not there"
        looked.append(f"Hugging Face {'cache' if offline else 'Hub'} {hf_repo_id(name)} ({type(err).__name__})")
    raise HubError(
        f"pretrained weights for {wanted} not found; looked in: {'; '.join(looked)}. "
        f"Set {HUB_ENV} to a folder containing {wanted}/, pass path=..., or rebuild them with the recipe in eval/recipes."
    )


def read_config(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise HubIntegrityError(f"{folder / CONFIG_NAME} is unreadable or not JSON: {err}") from err


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_folder(folder: Path, config: dict[str, Any] | None = None, only: list[str] | None = None) -> None:
    """Check size and sha256 of every file config.json lists (or just ``only``)."""
    config = config if config is not None else read_config(folder)
    files = config.get("files")
    if not files:
        raise HubIntegrityError(f"{folder / CONFIG_NAME} lists no files with their sha256; the folder is incomplete.")
    for item in files:
        if only is not None and item["name"] not in only:
            continue
        path = folder / item["name"]
        if not path.is_file():
            raise HubIntegrityError(f"{path} is missing; re-download or rebuild the model folder.")
        if path.stat().st_size != item["size"]:
            raise HubIntegrityError(
                f"{path} has {path.stat().st_size} bytes, config.json says {item['size']}: the file is truncated or replaced."
            )
        actual = sha256_file(path)
        if actual != item["sha256"]:
            raise HubIntegrityError(
                f"{path} sha256 {actual[:16]}... differs from config.json's {item['sha256'][:16]}...: "
                "the file is corrupt or was tampered with; nothing was loaded."
            )


def load(
    name: str,
    path: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """Build ``name``'s architecture and load its verified pretrained weights strictly."""
    from disco_zoo.weights import load_model_from_folder

    arch, _ = split_name(name)
    folder = resolve_folder(name, path=path, local_files_only=local_files_only)
    config = read_config(folder)
    if config.get("arch") != get_entry(arch).arch:
        raise HubIntegrityError(f"{folder} holds {config.get('arch')!r}, not {get_entry(arch).arch!r}.")
    verify_folder(folder, config)
    return load_model_from_folder(folder, config, **kwargs)
