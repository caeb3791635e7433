"""Hub resolution: which folder holds a pretrained name, what is published, and loading it.

A pretrained name is ``arch.tag`` (no tag: the arch's default tag, the first published
one). What is published is what the stores hold: a folder ``<arch>.<tag>/`` with a
``config.json`` under ``$DISCO_ZOO_HUB`` or the repository's ``hub/``; nothing else
declares it. Resolution order (DESIGN.md): an explicit path, ``$DISCO_ZOO_HUB``, the
repository's ``hub/``, then the Hugging Face cache or Hub (``HF_HUB_OFFLINE=1`` or
``local_files_only=True`` keeps it to the cache). Every file's sha256 is checked before
anything is loaded, loading is strict, and the loaded model carries its folder's config
as ``model.pretrained_cfg``.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import UnknownModelError, get_entry, list_models, normalize_name, split_name
from disco_zoo.store import CONFIG_NAME, FolderConfig, IntegrityError, load_folder_config, verify_folder

__all__ = [
    "HubError",
    "HubIntegrityError",
    "HUB_ENV",
    "REPO_HUB",
    "hub_roots",
    "list_pretrained",
    "published_folders",
    "folder_name",
    "hf_repo_id",
    "get_pretrained_cfg",
    "resolve_folder",
    "load",
    "load_folder",
]

HUB_ENV = "DISCO_ZOO_HUB"
REPO_HUB = Path(__file__).resolve().parent.parent / "hub"
HF_ORG = "disco-zoo"
HubIntegrityError = IntegrityError  # the store's error: a file is missing, truncated or tampered with


class HubError(DiscoZooError):
    """A pretrained model could not be found."""


def hub_roots() -> list[Path]:
    """Local stores, searched in order: ``$DISCO_ZOO_HUB``, then the repository's ``hub/``."""
    env_root = os.environ.get(HUB_ENV)
    return ([Path(env_root)] if env_root else []) + [REPO_HUB]


def published_folders() -> dict[str, Path]:
    """``arch.tag`` -> folder for every published folder of a registered architecture
    in the local stores (the first root that has a name wins)."""
    registered = set(list_models())
    found: dict[str, Path] = {}
    for root in hub_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            arch, _, tag = folder.name.partition(".")
            if tag and arch in registered and (folder / CONFIG_NAME).is_file():
                found.setdefault(folder.name, folder)
    return found


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``arch.tag`` names with published weights, matching ``pattern`` (by the
    full name or the arch alone)."""
    pattern = normalize_name(pattern) if pattern else "*"
    return sorted(n for n in published_folders()
                  if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern))


def _tags(arch: str) -> list[str]:
    return [name.partition(".")[2] for name in published_folders() if name.partition(".")[0] == arch]


def folder_name(name: str) -> str:
    """``resnet50-disco-2node`` -> ``resnet50_disco_2node.digits`` (default tag filled in)."""
    entry = get_entry(name)
    _, tag = split_name(name)
    if tag:
        return f"{entry.arch}.{tag}"
    tags = _tags(entry.arch)
    if not tags:
        raise HubError(
            f"model {entry.arch!r} has no pretrained weights in {', '.join(map(str, hub_roots()))}; "
            f"name a tag (e.g. {entry.arch}.digits) to look in the Hugging Face cache, or see "
            "`disco-zoo list --pretrained`."
        )
    return f"{entry.arch}.{tags[0]}"


def hf_repo_id(name: str) -> str:
    """The Hugging Face Hub repository of a pretrained name (its config's ``hf_hub_id``
    when a local copy says so, else the organisation's default)."""
    wanted = folder_name(name)
    local = published_folders().get(wanted)
    if local is not None:
        try:
            config = load_folder_config(local)
            if config.hf_hub_id:
                return config.hf_hub_id
        except DiscoZooError:
            pass
    return f"{HF_ORG}/{wanted}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_folder(name: str, path: str | os.PathLike[str] | None = None, local_files_only: bool = False) -> Path:
    """The folder holding ``name``'s weights, searched in the documented order."""
    if path is not None:
        explicit = Path(path)
        if (explicit / CONFIG_NAME).is_file():
            return explicit
        arch, tag = get_entry(name).arch, split_name(name)[1]
        inside = sorted(p for p in explicit.glob(f"{arch}.{tag or '*'}") if (p / CONFIG_NAME).is_file())
        if inside:
            return inside[0]
        wanted = f"{arch}.{tag or '<tag>'}"
        raise HubError(f"no {CONFIG_NAME} in {explicit} or {explicit / wanted}: pass the model's folder.")
    wanted = folder_name(name)
    looked: list[str] = []
    for root in hub_roots():
        candidate = root / wanted
        looked.append(str(candidate))
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    offline = local_files_only or _offline()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=hf_repo_id(name), local_files_only=offline))
    except Exception as err:  # huggingface_hub raises several types for "not there"
        looked.append(f"Hugging Face {'cache' if offline else 'Hub'} {hf_repo_id(name)} ({type(err).__name__})")
    arch, _, tag = wanted.partition(".")
    others = [t for t in _tags(arch) if t != tag]
    published = f" Published tags of {arch}: {', '.join(others)}." if others else ""
    raise HubError(
        f"pretrained weights for {wanted} not found; looked in: {'; '.join(looked)}.{published} "
        f"Set {HUB_ENV} to a folder containing {wanted}/, pass path=..., or rebuild them with the recipe in eval/recipes.sh."
    )


def get_pretrained_cfg(name: str, path: str | os.PathLike[str] | None = None, local_files_only: bool = False) -> FolderConfig:
    """The validated config of ``name``'s pretrained folder (its metadata, without the weights)."""
    return load_folder_config(resolve_folder(name, path=path, local_files_only=local_files_only))


def _format_loaders() -> dict[str, Callable[..., Any]]:
    """Loader per folder ``kind``: the dense format and the per-node shard format."""
    from disco_zoo.disco.shards import load_disco_model
    from disco_zoo.weights import load_dense

    return {"dense": load_dense, "disco": load_disco_model}


def load_folder(folder: str | os.PathLike[str], **kwargs: Any) -> Any:
    """The model a folder holds, every file verified, loaded strictly, with ``pretrained_cfg``."""
    folder = Path(folder)
    config = load_folder_config(folder)
    try:
        get_entry(config.arch)
    except UnknownModelError as err:
        raise DiscoZooError(f"{folder / CONFIG_NAME} names architecture {config.arch!r}, which is not registered: {err}") from None
    verify_folder(folder, config)
    model = _format_loaders()[config.kind](folder, config, **kwargs)
    model.pretrained_cfg = config
    return model


def load(
    name: str,
    path: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    **kwargs: Any,
) -> Any:
    """Build ``name``'s architecture and load its verified pretrained weights strictly."""
    entry = get_entry(name)
    folder = resolve_folder(name, path=path, local_files_only=local_files_only)
    config = load_folder_config(folder)
    if config.arch != entry.arch:
        raise HubIntegrityError(f"{folder} holds {config.arch!r}, not {entry.arch!r}.")
    return load_folder(folder, **kwargs)
