"""Write and read pretrained folders (config.json + safetensors), never half-written.

A folder is written into a temporary sibling and renamed into place in one step, so a
crash leaves either the old folder or the new one. Dense models are one
``model.safetensors``; DISCO models are one shard per node (see disco_zoo.disco.shards).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError

__all__ = ["DENSE_FILE", "storage_tensor", "write_folder_atomically", "file_record", "save_dense", "load_model_from_folder"]

DENSE_FILE = "model.safetensors"


def storage_tensor(tensor: Any, half: bool) -> Any:
    """How a tensor is stored: fp16 for weight matrices/kernels (>= 2-D) when ``half``;
    vectors (biases, norm scales, BatchNorm statistics) stay fp32: they are tiny, and
    rounding a small running variance to fp16 visibly moves accuracy."""
    if half and tensor.is_floating_point() and tensor.dim() >= 2:
        return tensor.half()
    return tensor


def file_record(path: Path) -> dict[str, Any]:
    """The ``files`` entry config.json keeps for one file: name, size, sha256."""
    from disco_zoo.hub import sha256_file

    return {"name": path.name, "size": path.stat().st_size, "sha256": sha256_file(path)}


def write_folder_atomically(folder: Path, write: Callable[[Path], dict[str, Any]]) -> Path:
    """Run ``write(tmp_dir) -> config``; record every file's hash; swap the folder in.

    ``write`` saves the weight files and returns config.json's content without ``files``;
    files it wrote are listed with their sha256 (README.md and config.json excluded).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; a published folder is world-readable
        config = write(tmp)
        weight_files = sorted(p for p in tmp.iterdir() if p.suffix == ".safetensors")
        config["files"] = [file_record(p) for p in weight_files]
        (tmp / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
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


def save_dense(model: Any, folder: Path, config: dict[str, Any], half: bool = False) -> Path:
    """Save a dense model's state dict (fp16 storage when ``half``) with its config."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> dict[str, Any]:
        state = {k: storage_tensor(v, half).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / DENSE_FILE))
        return {**config, "kind": "dense", "storage_dtype": "fp16" if half else "fp32"}

    return write_folder_atomically(folder, write)


def load_model_from_folder(folder: Path, config: dict[str, Any], **kwargs: Any) -> Any:
    """Build the architecture named in ``config`` and load the folder's weights strictly."""
    from disco_zoo.registry import create_model

    kind = config.get("kind")
    args = {**config.get("args", {}), **kwargs}
    if kind == "dense":
        from safetensors.torch import load_file

        model = create_model(config["arch"], **args)
        state = load_file(str(folder / DENSE_FILE))
        reference = model.state_dict()
        state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
        _load_strict(model, state, folder)
        return model.eval()
    if kind == "disco":
        from disco_zoo.disco.shards import load_disco_model  # the DISCO core owns the shard format

        return load_disco_model(folder, config, **kwargs)
    raise DiscoZooError(f"{folder}/config.json has kind {kind!r}; expected 'dense' or 'disco'.")


def _load_strict(model: Any, state: dict[str, Any], folder: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise DiscoZooError(f"weights in {folder} do not fit the architecture in its config.json: {err}") from err
