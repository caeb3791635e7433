"""Hub resolution: which folder holds a pretrained name, what is published, and loading it.

A pretrained name is ``arch.tag`` (no tag: the arch's default tag, the first published
one). What is published is what the stores hold: a folder ``<arch>.<tag>/`` with a
``config.json`` under ``$DISCO_ZOO_HUB`` or the repository's ``hub/``; nothing else
declares it. An installed package has no ``hub/``: it knows the published names, their
Hugging Face repositories and files from the index generated from ``hub/``
(:mod:`disco_zoo.published`). Resolution order (DESIGN.md): an explicit path, ``$DISCO_ZOO_HUB``, the
repository's ``hub/``, then the Hugging Face cache or Hub (``HF_HUB_OFFLINE=1`` or
``local_files_only=True`` keeps it to the cache). Every file's sha256 is checked before
anything is loaded, loading is strict, and the loaded model carries its folder's config
as ``model.pretrained_cfg``. ``resolve_folder(name, node=k)`` fetches from the Hub only
what device k needs: config.json, the card and its own shard.
Wherever a command or :func:`load` takes a name it takes a model folder's path too
(:func:`is_model_path`): this module is the one place that tells them apart.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import UnknownModelError, get_entry, list_models, normalize_name, split_name
from disco_zoo.published import HF_ORG, published_index
from disco_zoo.store import (CARD_NAME, CONFIG_NAME, FolderConfig, IntegrityError, load_folder_config, shard_file_name,
                             verify_folder)

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
    "is_model_path",
    "resolve_folder",
    "resolve_path_or_name",
    "node_patterns",
    "default_store",
    "is_published_folder",
    "load",
    "load_folder",
]

HUB_ENV = "DISCO_ZOO_HUB"
REPO_HUB = Path(__file__).resolve().parent.parent / "hub"  # a clone's store; absent in an installed wheel
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


def _published_names() -> list[str]:
    """Local stores' names first, then the shipped index's (what a pip install knows)."""
    registered = set(list_models())
    local = list(published_folders())
    return local + [n for n in published_index() if n not in local and n.partition(".")[0] in registered]


def list_pretrained(pattern: str = "*") -> list[str]:
    """Sorted ``arch.tag`` names with published weights, matching ``pattern`` (by the
    full name or the arch alone): the local stores' and the shipped index's."""
    pattern = normalize_name(pattern) if pattern else "*"
    return sorted(n for n in _published_names()
                  if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n.split(".")[0], pattern))


def _tags(arch: str) -> list[str]:
    return [name.partition(".")[2] for name in _published_names() if name.partition(".")[0] == arch]


def default_store() -> Path:
    """Where ``train`` and ``sparsify`` write by default: ``$DISCO_ZOO_HUB``, else the
    clone's ``hub/``, else ``./hub`` (an installed package has no hub/ of its own)."""
    env_root = os.environ.get(HUB_ENV)
    if env_root:
        return Path(env_root)
    return REPO_HUB if REPO_HUB.is_dir() else Path("hub")


def is_published_folder(folder: Path) -> bool:
    """Whether ``folder`` is a model folder inside a local store (``$DISCO_ZOO_HUB`` or the
    clone's ``hub/``): the folders users load by name, which a write must not replace unasked."""
    if not (Path(folder) / CONFIG_NAME).is_file():
        return False
    here = Path(folder).resolve()
    return any(root.is_dir() and here.parent == root.resolve() for root in hub_roots())


def node_patterns(node: int) -> list[str]:
    """The files device ``node`` fetches: config.json, the card and its own shard."""
    return [CONFIG_NAME, CARD_NAME, shard_file_name(node)]


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
    when a local copy says so, else the shipped index's, else the organisation's default)."""
    wanted = folder_name(name)
    local = published_folders().get(wanted)
    if local is not None:
        try:
            config = load_folder_config(local)
            if config.hf_hub_id:
                return config.hf_hub_id
        except DiscoZooError:
            pass
    indexed = published_index().get(wanted)
    return indexed.hf_hub_id if indexed is not None else f"{HF_ORG}/{wanted}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _download_patterns(wanted: str, node: int | None) -> list[str] | None:
    """``allow_patterns`` for a download: device ``node``'s files of a DISCO folder, or
    everything (no node; or a dense folder, whose one file the root splits on the fly)."""
    indexed = published_index().get(wanted)
    if node is None or (indexed is not None and indexed.kind != "disco"):
        return None
    if indexed is not None and not 0 <= node < indexed.nodes:
        raise HubError(f"{wanted} is split over {indexed.nodes} nodes; node {node} does not exist (0..{indexed.nodes - 1}).")
    return node_patterns(node)


def is_model_path(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` names a folder (or file) rather than a registry name: it has a path
    separator, starts with '.' or '~', is a folder holding a config.json here, or is an
    existing folder that no registered architecture is called. Names never hold a
    separator, so ``./resnet18`` is how a folder named like a model is given."""
    text = os.fspath(text)
    separators = tuple(s for s in (os.sep, os.altsep, "/") if s)
    if any(sep in text for sep in separators) or text.startswith((".", "~")) or (Path(text) / CONFIG_NAME).is_file():
        return True
    if not Path(text).is_dir():
        return False
    try:
        get_entry(text)
    except UnknownModelError:
        return True
    return False


def _user_folder(text: str | os.PathLike[str]) -> Path:
    """A model folder given by its path: it must hold a config.json."""
    folder = Path(text).expanduser()
    if not folder.exists():
        raise HubError(f"{os.fspath(text)!r}: no such folder; give a model folder (with its {CONFIG_NAME}) or a "
                       "model name (see `disco-zoo list --pretrained`).")
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(f"{folder} holds no {CONFIG_NAME}: it is not a model folder (one written by "
                       "`disco-zoo train` or `disco-zoo sparsify`, or a published one).")
    return folder


def resolve_path_or_name(text: str | os.PathLike[str]) -> Path:
    """What a user's argument names: an existing file or folder as given (its format is
    the reader's to check), else a published name's folder."""
    if Path(text).expanduser().exists():
        return Path(text).expanduser()
    if is_model_path(text):
        raise HubError(f"{os.fspath(text)!r}: no such file or folder.")
    try:
        get_entry(os.fspath(text))
    except UnknownModelError as err:
        raise HubError(f"{os.fspath(text)!r} is not a file or folder here, nor a model name ({err})") from None
    return resolve_folder(os.fspath(text))


def resolve_folder(name: str, path: str | os.PathLike[str] | None = None, local_files_only: bool = False,
                   node: int | None = None, near: Path | None = None) -> Path:
    """The folder holding ``name``'s weights, searched in the documented order; ``name``
    may be the folder's own path (:func:`is_model_path`).

    With ``node=k`` a download of a DISCO folder fetches only what device k needs
    (:func:`node_patterns`), not every node's weights; a local folder is used as it is.
    ``near``: a folder whose sub-folders are searched first (the store a DISCO folder
    given by its path sits in, where its dense counterpart usually lives too).
    """
    if is_model_path(name):
        return _user_folder(name)
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
    for root in ([Path(near)] if near is not None else []) + hub_roots():
        candidate = root / wanted
        looked.append(str(candidate))
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    offline = local_files_only or _offline()
    try:
        from huggingface_hub import snapshot_download

        patterns = _download_patterns(wanted, node)
        return Path(snapshot_download(repo_id=hf_repo_id(name), local_files_only=offline, allow_patterns=patterns))
    except HubError:
        raise
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
    """Build ``name``'s architecture (``name`` may be a model folder's path) and load its
    verified pretrained weights strictly."""
    if is_model_path(name):
        return load_folder(resolve_folder(name), **kwargs)
    entry = get_entry(name)
    folder = resolve_folder(name, path=path, local_files_only=local_files_only)
    config = load_folder_config(folder)
    if config.arch != entry.arch:
        raise HubIntegrityError(f"{folder} holds {config.arch!r}, not {entry.arch!r}.")
    return load_folder(folder, **kwargs)
