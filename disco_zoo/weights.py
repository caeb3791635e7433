"""The dense weight format: one ``model.safetensors`` beside ``config.json``.

Folders are written through :func:`disco_zoo.store.write_folder_atomically`, so a crash
leaves either the old folder or the new one. DISCO models use the per-node shard format
instead (:mod:`disco_zoo.disco.shards`); :mod:`disco_zoo.hub` picks the format by the
config's ``kind``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import build_model
from disco_zoo.store import FolderConfig, write_folder_atomically

__all__ = ["DENSE_FILE", "storage_tensor", "save_dense", "load_dense", "load_strict"]

DENSE_FILE = "model.safetensors"


def storage_tensor(tensor: Any, half: bool) -> Any:
    """How a tensor is stored: fp16 for weight matrices/kernels (>= 2-D) when ``half``;
    vectors (biases, norm scales, BatchNorm statistics) stay fp32: they are tiny, and
    rounding a small running variance to fp16 visibly moves accuracy."""
    if half and tensor.is_floating_point() and tensor.dim() >= 2:
        return tensor.half()
    return tensor


def save_dense(model: Any, folder: Path, config: dict[str, Any], half: bool = False) -> Path:
    """Save a dense model's state dict (fp16 storage when ``half``) with its config."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> dict[str, Any]:
        state = {k: storage_tensor(v, half).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / DENSE_FILE))
        return {**config, "kind": "dense", "storage_dtype": "fp16" if half else "fp32"}

    return write_folder_atomically(folder, write)


def load_dense(folder: Path, config: FolderConfig, **kwargs: Any) -> Any:
    """Build ``config.arch`` with its args (``kwargs`` override) and load ``model.safetensors`` strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = build_model(config.arch, **{**config.args, **kwargs})
    try:
        state = load_file(str(Path(folder) / DENSE_FILE))
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
