"""The pretrained folder format: ``config.json``, sha256 records and atomic writes.

A folder is ``<arch>.<tag>/`` holding ``config.json``, its weight files (safetensors)
and a ``README.md`` card; the same layout is a Hugging Face Hub model repository. This
module is the one place that reads or validates a folder's config and checks its files,
so every loader (dense, per-node shards, the runtime's ranks) refuses the same damage
with the same message. It knows nothing of torch, models or where folders live.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError
from disco_zoo.weight_storage import STORAGE_DTYPES

__all__ = [
    "CONFIG_NAME",
    "CARD_NAME",
    "ConfigError",
    "IntegrityError",
    "FolderConfig",
    "read_config",
    "load_folder_config",
    "verify_folder",
    "sha256_file",
    "file_record",
    "write_folder_atomically",
    "shard_file_name",
]

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
KINDS = ("dense", "disco")


def shard_file_name(k: int) -> str:
    """Node k's weight file in a DISCO folder: the one file a device needs besides
    config.json (and the card), so a per-node download can name it without torch."""
    return f"node{k}.safetensors"


class ConfigError(DiscoZooError):
    """A folder's config.json is unreadable, not JSON, or has a missing or bad field."""


class IntegrityError(DiscoZooError):
    """A file is missing, has the wrong size or a sha256 that differs from config.json."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """The ``files`` entry config.json keeps for one file: name, size, sha256."""
    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def read_config(folder: Path | str) -> dict[str, Any]:
    """config.json as a JSON object; anything else is one clear error naming the file."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: {folder} is not a model folder (it needs a {CONFIG_NAME}).")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is unreadable or not JSON ({err}); re-download or rebuild the folder.") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(raw).__name__}; re-download or rebuild the folder.")
    return raw


# -- the typed config ---------------------------------------------------------------------


def _field(raw: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    """``raw[key]`` checked against ``kind`` (JSON's true/false is no number); a missing
    key is ``default``, or an error naming the field when there is none."""
    if raw.get(key) is None:
        if default is ...:
            raise ConfigError(f"{where} lacks the field {key!r}; the folder is incomplete, rebuild it.")
        return default
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{where}: field {key!r} must be {_kind_name(kind)}, got {type(value).__name__} {value!r:.60}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({"str": "a string", "int": "an integer", "float": "a number", "dict": "an object",
                        "list": "a list", "bool": "true/false"}.get(k.__name__, k.__name__) for k in kinds)


def _numbers(values: Any, key: str, where: str, length: int | None = None) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: field {key!r} must be a list of finite numbers, got {values!r:.60}")
    if length is not None and len(values) != length:
        raise ConfigError(f"{where}: field {key!r} must have {length} numbers, got {len(values)}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class FolderConfig:
    """What one pretrained folder is: the single source of a model's metadata.

    The loaded model carries it as ``model.pretrained_cfg`` (as timm's models do), and
    it answers timm's data-config keys (``input_size``, ``mean``, ``std``,
    ``interpolation``, ``crop_pct``, ...) through :meth:`get`, so
    ``timm.data.resolve_data_config(model=model)`` works on our models too.
    """

    arch: str
    kind: str  # "dense" | "disco"
    tag: str
    args: dict[str, Any]
    files: tuple[dict[str, Any], ...]
    task: str = "classification"
    dataset: str = ""
    input_size: tuple[int, int, int] = (3, 224, 224)
    fixed_input_size: bool = False
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    class_names: tuple[str, ...] | None = None
    dense: str | None = None  # the dense counterpart, ``arch.tag``
    nodes: int = 1
    ratios: tuple[float, ...] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    storage_dtype: str = "fp32"
    recipe: str = ""
    hf_hub_id: str = ""
    license: str = ""
    partition: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def num_classes(self) -> int | None:
        if isinstance(self.args.get("num_classes"), int):
            return int(self.args["num_classes"])
        return len(self.class_names) if self.class_names else None

    def file_names(self) -> list[str]:
        return [f["name"] for f in self.files]

    # Mapping access (timm reads a model's pretrained_cfg with .get): every field, plus
    # the derived num_classes and timm's crop_mode.
    def keys(self) -> list[str]:
        return [f for f in self.__dataclass_fields__ if f != "raw"] + ["num_classes", "crop_mode"]

    def get(self, key: str, default: Any = None) -> Any:
        if key == "crop_mode":
            return "center"
        return getattr(self, key) if key in self.keys() else default

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return self.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def to_dict(self) -> dict[str, Any]:
        """The config.json document (every key it was read from, validated ones normalised)."""
        out = dict(self.raw)
        out.update({
            "arch": self.arch, "kind": self.kind, "tag": self.tag, "args": dict(self.args), "task": self.task,
            "dataset": self.dataset, "input_size": list(self.input_size), "fixed_input_size": self.fixed_input_size,
            "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation,
            "crop_pct": self.crop_pct, "nodes": self.nodes, "metrics": dict(self.metrics),
            "storage_dtype": self.storage_dtype, "files": [dict(f) for f in self.files],
        })
        for key, value in (("class_names", self.class_names), ("dense", self.dense), ("ratios", self.ratios),
                           ("recipe", self.recipe or None), ("hf_hub_id", self.hf_hub_id or None),
                           ("license", self.license or None), ("partition", self.partition)):
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = CONFIG_NAME, tag: str = "") -> "FolderConfig":
        """Validate a parsed config.json; every problem names ``source`` and the field.

        ``tag`` is the folder name's tag (``arch.tag``), used when the config has none.
        """
        where = str(source)
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must hold a JSON object, got {type(raw).__name__}")
        arch = _field(raw, "arch", str, where)
        kind = _field(raw, "kind", str, where)
        if kind not in KINDS:
            raise ConfigError(f"{where}: field 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
        args = _field(raw, "args", dict, where, {})
        files = _field(raw, "files", list, where)
        for i, item in enumerate(files):
            if (not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("size"), int)
                    or not isinstance(item.get("sha256"), str) or "/" in item["name"] or item["name"].startswith(".")):
                raise ConfigError(f"{where}: files[{i}] must be {{name, size, sha256}} of a file in the folder, got {item!r:.80}")
        if not files:
            raise ConfigError(f"{where} lists no files with their sha256; the folder is incomplete.")
        input_size = _numbers(_field(raw, "input_size", list, where, [3, 224, 224]), "input_size", where, 3)
        if any(v <= 0 or v != int(v) for v in input_size):
            raise ConfigError(f"{where}: field 'input_size' must be 3 positive integers (C, H, W), got {list(input_size)}")
        channels = int(input_size[0])
        mean = _numbers(_field(raw, "mean", list, where, [0.485, 0.456, 0.406]), "mean", where, channels)
        std = _numbers(_field(raw, "std", list, where, [0.229, 0.224, 0.225]), "std", where, channels)
        if any(s <= 0 for s in std):
            raise ConfigError(f"{where}: field 'std' must be positive numbers, got {list(std)}")
        class_names = _field(raw, "class_names", list, where, None)
        if class_names is not None and not all(isinstance(c, str) for c in class_names):
            raise ConfigError(f"{where}: field 'class_names' must be a list of strings")
        nodes = _field(raw, "nodes", int, where, 1)
        partition = _field(raw, "partition", dict, where, None)
        if kind == "disco":
            nodes = _field(raw, "nodes", int, where)
            partition = _field(raw, "partition", dict, where)
            if nodes < 2:
                raise ConfigError(f"{where}: field 'nodes' must be >= 2 for a DISCO folder, got {nodes}")
            if partition.get("nodes") != nodes:
                raise ConfigError(f"{where}: the partition is for {partition.get('nodes')!r} nodes, field 'nodes' says {nodes}")
        ratios = raw.get("ratios", args.get("ratios"))
        ratios = _numbers(ratios, "ratios", where, nodes) if ratios is not None else None
        metrics = _field(raw, "metrics", dict, where, {})
        storage_dtype = _field(raw, "storage_dtype", str, where, "fp32")
        if storage_dtype not in STORAGE_DTYPES:
            raise ConfigError(f"{where}: field 'storage_dtype' must be one of {', '.join(STORAGE_DTYPES)}, "
                              f"got {storage_dtype!r}")
        return cls(
            arch=arch, kind=kind, tag=_field(raw, "tag", str, where, tag or raw.get("dataset") or ""), args=args,
            files=tuple(files), task=_field(raw, "task", str, where, "classification"),
            dataset=_field(raw, "dataset", str, where, ""), input_size=tuple(int(v) for v in input_size),  # type: ignore[arg-type]
            fixed_input_size=_field(raw, "fixed_input_size", bool, where, False), mean=mean, std=std,
            interpolation=_field(raw, "interpolation", str, where, "bilinear"),
            crop_pct=float(_field(raw, "crop_pct", (int, float), where, 1.0)),
            class_names=tuple(class_names) if class_names is not None else None,
            dense=_field(raw, "dense", str, where, None), nodes=nodes, ratios=ratios, metrics=metrics,
            storage_dtype=storage_dtype, recipe=_field(raw, "recipe", str, where, ""),
            hf_hub_id=_field(raw, "hf_hub_id", str, where, ""), license=_field(raw, "license", str, where, ""),
            partition=partition, raw=dict(raw),
        )


def load_folder_config(folder: Path | str) -> FolderConfig:
    """The validated config of a model folder (its tag taken from the folder's name)."""
    folder = Path(folder)
    _, _, tag = folder.name.partition(".")
    return FolderConfig.from_dict(read_config(folder), folder / CONFIG_NAME, tag=tag)


def verify_folder(folder: Path | str, config: FolderConfig | dict[str, Any] | None = None,
                  only: list[str] | None = None) -> None:
    """Check size and sha256 of every file config.json lists (or just ``only``)."""
    folder = Path(folder)
    if config is None:
        config = load_folder_config(folder)
    elif isinstance(config, dict):
        config = FolderConfig.from_dict(config, folder / CONFIG_NAME)
    for item in config.files:
        if only is not None and item["name"] not in only:
            continue
        path = folder / item["name"]
        if not path.is_file():
            raise IntegrityError(f"{path} is missing; re-download or rebuild the model folder.")
        if path.stat().st_size != item["size"]:
            raise IntegrityError(
                f"{path} has {path.stat().st_size} bytes, config.json says {item['size']}: the file is truncated or replaced."
            )
        actual = sha256_file(path)
        if actual != item["sha256"]:
            raise IntegrityError(
                f"{path} sha256 {actual[:16]}... differs from config.json's {item['sha256'][:16]}...: "
                "the file is corrupt or was tampered with; nothing was loaded."
            )


def write_folder_atomically(folder: Path, write: Callable[[Path], dict[str, Any]]) -> Path:
    """Run ``write(tmp_dir) -> config``; record every file's hash; swap the folder in.

    ``write`` saves the weight files and returns config.json's content without ``files``;
    files it wrote are listed with their sha256 (README.md and config.json excluded). A
    crash leaves either the old folder or the new one, never half of either.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; a published folder is world-readable
        config = write(tmp)
        weight_files = sorted(p for p in tmp.iterdir() if p.suffix == ".safetensors")
        config["files"] = [file_record(p) for p in weight_files]
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
        for path in tmp.iterdir():
            path.chmod(0o644)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
