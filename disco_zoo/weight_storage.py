"""How weights are stored on disk: fp32, fp16 or int8, and back to fp32 for compute.

Every node computes in fp32; storage only decides how many bytes a folder (in git, kept
for ever) and a download cost. Only weight matrices and kernels (tensors of >= 2
dimensions) are rounded: vectors (biases, norm scales, BatchNorm statistics) stay fp32.
They are tiny, and rounding a small running variance visibly moves accuracy.

int8 is weight-only, symmetric and per output channel (dimension 0), as onnxruntime's
and PyTorch's weight-only quantizers do it: ``w ~= q * scale`` with ``q`` in [-127, 127]
and one fp32 scale per output channel, stored beside the tensor as
``<name>.int8_scale``. It halves an fp16 file; whether a model keeps its metric is the
storage decision's business (:func:`disco_zoo.commands.common.storage_decision`).
"""
from __future__ import annotations

from typing import Any

from disco_zoo.errors import DiscoZooError

__all__ = ["STORAGE_DTYPES", "INT8_SCALE_SUFFIX", "check_storage_dtype", "stored_tensors", "compute_tensors",
           "stored_bytes", "storage_rounded"]

STORAGE_DTYPES = ("fp32", "fp16", "int8")
INT8_SCALE_SUFFIX = ".int8_scale"
_INT8_MAX = 127


def check_storage_dtype(storage: str, where: str = "--storage") -> str:
    """``storage`` if it is a storage dtype, else one clear error."""
    if storage not in STORAGE_DTYPES:
        raise DiscoZooError(f"{where} must be one of {', '.join(STORAGE_DTYPES)}, got {storage!r}")
    return storage


def _rounded_kind(tensor: Any, storage: str) -> bool:
    """Whether ``storage`` rounds this tensor (weight matrices and kernels only)."""
    return storage != "fp32" and tensor.is_floating_point() and tensor.dim() >= 2


def _int8(tensor: Any) -> tuple[Any, Any]:
    """(q, scale): the per-output-channel symmetric int8 form of ``tensor``."""
    import torch

    if tensor.numel() == 0:  # a node's slice with no channels left (pruned away): nothing to scale
        return tensor.detach().to(torch.int8), torch.ones(tensor.shape[0])
    flat = tensor.detach().float().reshape(tensor.shape[0], -1)
    scale = flat.abs().amax(dim=1) / _INT8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel stays exactly zero
    q = torch.round(flat / scale[:, None]).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return q.reshape(tensor.shape), scale


def stored_tensors(name: str, tensor: Any, storage: str) -> dict[str, Any]:
    """What a file holds for one tensor: itself (fp32 or fp16), or its int8 form and scales."""
    if not _rounded_kind(tensor, storage):
        return {name: tensor}
    if storage == "fp16":
        return {name: tensor.half()}
    q, scale = _int8(tensor)
    return {name: q, name + INT8_SCALE_SUFFIX: scale}


def compute_tensors(stored: dict[str, Any]) -> dict[str, Any]:
    """A file's tensors back in the dtype nodes compute in: fp16 to fp32, int8 times its scales.

    Always fresh copies: a tensor handed out by ``safe_open`` may be a view of the
    memory-mapped file, and one surviving view keeps every touched page resident.
    """
    import torch

    out: dict[str, Any] = {}
    for name, tensor in stored.items():
        if name.endswith(INT8_SCALE_SUFFIX):
            continue
        scale = stored.get(name + INT8_SCALE_SUFFIX)
        if scale is not None:
            if tensor.dtype != torch.int8 or scale.shape != tensor.shape[:1]:
                raise DiscoZooError(f"tensor {name!r} has an int8 scale but is {tensor.dtype} of shape "
                                    f"{tuple(tensor.shape)} with {tuple(scale.shape)} scales; the file is damaged.")
            out[name] = tensor.float() * scale.float().reshape(-1, *([1] * (tensor.dim() - 1)))
        elif tensor.dtype == torch.float16:
            out[name] = tensor.float()
        else:
            out[name] = tensor.clone()
    orphans = [n for n in stored if n.endswith(INT8_SCALE_SUFFIX) and n[: -len(INT8_SCALE_SUFFIX)] not in stored]
    if orphans:
        raise DiscoZooError(f"int8 scales without their tensor ({', '.join(orphans[:3])}); the file is damaged.")
    return out


def stored_bytes(tensor: Any, storage: str) -> int:
    """Bytes ``tensor`` takes in a file stored as ``storage`` (int8 scales included)."""
    return sum(t.numel() * t.element_size() for t in stored_tensors("t", tensor, storage).values())


def storage_rounded(tensor: Any, storage: str) -> Any:
    """``tensor`` as it comes back from ``storage`` (fp32): what a user loads."""
    return compute_tensors(stored_tensors("t", tensor, storage))["t"].to(tensor.dtype)
