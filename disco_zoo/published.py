"""What is published, for an installed package: a small index generated from ``hub/``.

A wheel has no ``hub/`` folder, so by itself it cannot know which ``arch.tag`` names
exist, which Hugging Face repository holds each, or which file a device needs. The
repository's ``hub/`` stays the one source of truth: ``disco-zoo hub index`` writes
``disco_zoo/published.json`` from it (name -> repo id, kind, nodes, files with size and
sha256 of the weight files; config.json and the card are not indexed, so regenerating a
card never makes it stale), the package ships that file as data, and a test fails when it is stale. The
hub's resolution consults it only when no local store has a name. No torch import.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.store import CONFIG_NAME, load_folder_config

__all__ = ["INDEX_PATH", "HF_ORG", "PublishedModel", "build_index", "render_index", "published_index", "write_index"]

INDEX_PATH = Path(__file__).resolve().parent / "published.json"
HF_ORG = "disco-zoo"
INDEX_VERSION = 1


@dataclass(frozen=True)
class PublishedModel:
    """One published folder as the index records it."""

    name: str
    hf_hub_id: str
    kind: str
    nodes: int
    files: tuple[dict[str, Any], ...]  # the weight files, {name, size, sha256}, as config.json lists them

    def size(self, names: list[str] | None = None) -> int:
        """Bytes of the listed files (all of them without ``names``)."""
        return sum(int(f["size"]) for f in self.files if names is None or f["name"] in names)


def build_index(root: Path) -> dict[str, Any]:
    """The index document for every ``arch.tag`` folder with a config.json under ``root``."""
    models: dict[str, Any] = {}
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if "." not in folder.name or not (folder / CONFIG_NAME).is_file():
            continue
        config = load_folder_config(folder)
        models[folder.name] = {"hf_hub_id": config.hf_hub_id or f"{HF_ORG}/{folder.name}", "kind": config.kind,
                               "nodes": config.nodes, "files": [dict(f) for f in config.files]}
    return {"version": INDEX_VERSION, "models": models}


def render_index(root: Path) -> str:
    """The index as the file holds it (stable text, so staleness is a plain comparison)."""
    return json.dumps(build_index(root), indent=1, sort_keys=True) + "\n"


def write_index(root: Path, path: Path = INDEX_PATH) -> bool:
    """Write the index of ``root`` to ``path``; whether it changed."""
    text = render_index(root)
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    published_index.cache_clear()
    return True


@lru_cache(maxsize=None)
def published_index(path: Path = INDEX_PATH) -> dict[str, PublishedModel]:
    """``arch.tag`` -> what the shipped index says (empty when the file is absent)."""
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
        return {name: PublishedModel(name=name, hf_hub_id=item["hf_hub_id"], kind=item["kind"], nodes=int(item["nodes"]),
                                     files=tuple(item["files"])) for name, item in doc["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DiscoZooError(f"{path} is damaged ({type(err).__name__}: {err}); reinstall disco-zoo.") from None
