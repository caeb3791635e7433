"""Per-node safetensors shards: node k's file holds only what node k computes with.

For a split conv/linear node k stores rows O_k of the weight restricted to the columns
it reads (its own group and every S_kj, in increasing channel order; the partition in
config.json says which) and bias rows O_k; for the reduce head it stores its columns
I_k, and root also stores the bias. Tensors the partition lists (norm scales,
BatchNorm statistics, position embeddings, ...) are sliced by node; everything else
is replicated. ``config.json`` holds the partition (hence every mask) and the sha256
of each file, so a node can rebuild its part from its own file alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from disco_zoo.disco.adapters import get_partition
from disco_zoo.disco.partition import Partition
from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import build_model
from disco_zoo.store import FolderConfig, load_folder_config, shard_file_name, verify_folder, write_folder_atomically
from disco_zoo.weight_storage import INT8_SCALE_SUFFIX, check_storage_dtype, compute_tensors, stored_tensors

__all__ = [
    "node_state_dict", "save_shards", "load_node_shard", "read_node_shard", "assemble_state_dict", "load_shards_into",
    "load_disco_model", "shard_file", "shard_rounded_state",
]


def shard_file(k: int) -> str:
    return shard_file_name(k)


def _index(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def _slice(name: str, tensor: torch.Tensor, part: Partition, k: int) -> torch.Tensor | None:
    """Node k's slice of one state tensor (None when node k stores none of it)."""
    module, _, leaf = name.rpartition(".")
    layer = part.layers.get(module)
    if layer is not None and leaf in ("weight", "bias"):
        if leaf == "bias":
            if layer.mode == "reduce":
                return tensor if k == layer.root else None
            return tensor[_index(layer.out_groups[k])]
        return tensor[_index(layer.rows(k))][:, _index(layer.columns(k))]
    split = part.tensors.get(name)
    if split is not None:
        return tensor.index_select(split.dim, _index(split.groups[k]))
    return tensor


def node_state_dict(state: dict[str, torch.Tensor], part: Partition, k: int) -> dict[str, torch.Tensor]:
    """What node k stores: its slice of every state tensor (contiguous, detached)."""
    out = {}
    for name, tensor in state.items():
        piece = _slice(name, tensor, part, k)
        if piece is not None:
            out[name] = piece.detach().contiguous().clone()
    return out


def shard_rounded_state(model: nn.Module, storage: str) -> dict[str, torch.Tensor]:
    """``model``'s full state dict as it loads back from shards stored as ``storage``.

    Why: int8 scales are per output channel of each node's slice (its rows, and only the
    columns it keeps), not of the whole tensor, so rounding the whole tensor is not what a
    user loads; this rounds what each shard holds and assembles it as the loader does."""
    part = get_partition(model)
    state = {name: tensor.detach() for name, tensor in model.state_dict().items()}
    shards = [{name: compute_tensors(stored_tensors(name, tensor, storage))[name].to(tensor.dtype)
               for name, tensor in node_state_dict(state, part, k).items()} for k in range(part.nodes)]
    return assemble_state_dict(shards, part, state)


def save_shards(model: nn.Module, folder: Path | str, extra: dict[str, Any] | None = None,
                storage: str = "fp32") -> Path:
    """Write ``node{k}.safetensors`` for every node plus config.json (partition, sha256s).

    The folder is written atomically (see :mod:`disco_zoo.weights`); ``extra`` is merged
    into config.json: give ``arch`` (registry name) and ``args`` (builder arguments) so
    that :func:`load_disco_model` and the hub can rebuild the model. ``storage`` rounds
    weight matrices to fp16 or int8 (see :mod:`disco_zoo.weight_storage`; loaders compute in fp32).
    """
    from safetensors.torch import save_file

    check_storage_dtype(storage)
    part = get_partition(model)
    state = model.state_dict()

    def write(tmp: Path) -> dict[str, Any]:
        for k in range(part.nodes):
            tensors = {name: stored for key, value in node_state_dict(state, part, k).items()
                       for name, stored in stored_tensors(key, value, storage).items()}
            save_file(tensors, str(tmp / shard_file(k)), metadata={"node": str(k)})
        return {**(extra or {}), "kind": "disco", "nodes": part.nodes, "partition": part.to_dict(),
                "storage_dtype": storage}

    return write_folder_atomically(Path(folder), write)


def load_node_shard(folder: Path | str, k: int, verify: bool = True) -> tuple[Partition, dict[str, torch.Tensor]]:
    """Node k's partition and tensors, reading only config.json and its own file.

    The file is memory-mapped (safetensors ``safe_open``); with ``verify`` its size and
    sha256 must match config.json first, so a damaged shard is refused before use.
    """
    part, _, tensors = read_node_shard(folder, k, verify)
    return part, tensors


def read_node_shard(folder: Path | str, k: int, verify: bool = True) -> tuple[Partition, FolderConfig, dict[str, torch.Tensor]]:
    """(partition, the folder's config, node k's tensors in fp32): what one rank needs, and nothing more."""
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    config = load_folder_config(folder)
    if config.kind != "disco":
        raise DiscoZooError(f"{folder} holds a {config.kind} model, not DISCO shards; run a DISCO folder or model.")
    part = _partition(config, folder)
    if not 0 <= k < part.nodes:
        raise DiscoZooError(f"node {k} does not exist; this model has {part.nodes} nodes")
    path = folder / shard_file(k)
    if not path.is_file():
        raise DiscoZooError(f"missing shard {path}: node {k} needs its own file")
    if verify:
        verify_folder(folder, config, only=[path.name])
    try:
        with safe_open(str(path), framework="pt") as handle:
            # Cast one tensor at a time: the stored copy of the whole shard never coexists
            # with the fp32 one, so loading grows memory by the fp32 weights only.
            names = set(handle.keys())
            tensors: dict[str, torch.Tensor] = {}
            for name in handle.keys():
                if name.endswith(INT8_SCALE_SUFFIX) and name[: -len(INT8_SCALE_SUFFIX)] in names:
                    continue  # read with its tensor
                stored = {key: handle.get_tensor(key) for key in (name, name + INT8_SCALE_SUFFIX) if key in names}
                tensors.update(compute_tensors(stored))
    except (SafetensorError, OSError) as err:
        raise DiscoZooError(f"{path} is not a readable safetensors file ({err}).") from None
    return part, config, tensors


def _partition(config: FolderConfig, folder: Path | str) -> Partition:
    """The folder's partition; a malformed one is a clear error naming the file."""
    try:
        return Partition.from_dict(config.partition or {})
    except DiscoZooError as err:
        raise DiscoZooError(f"{Path(folder) / 'config.json'}: bad partition: {err}") from None
    except (KeyError, TypeError, ValueError) as err:
        raise DiscoZooError(f"{Path(folder) / 'config.json'}: malformed partition ({type(err).__name__}: {err}); "
                            "rebuild the folder with `disco-zoo sparsify`.") from None


def assemble_state_dict(
    shards: list[dict[str, torch.Tensor]], part: Partition, like: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The full state dict from every node's tensors (closed weight entries are zero).

    ``like`` gives each tensor's full shape and dtype (a freshly built model's state dict).
    """
    out: dict[str, torch.Tensor] = {}
    for name, ref in like.items():
        module, _, leaf = name.rpartition(".")
        layer = part.layers.get(module)
        split = part.tensors.get(name)
        if layer is not None and leaf in ("weight", "bias"):
            full = torch.zeros_like(ref)
            for k, shard in enumerate(shards):
                if name not in shard:
                    continue
                if leaf == "bias":
                    rows = _index(layer.rows(k) if layer.mode == "reduce" else layer.out_groups[k])
                    full[rows] = shard[name]
                else:
                    rows, cols = _index(layer.rows(k)), _index(layer.columns(k))
                    if layer.mode == "reduce":
                        full[:, cols] = shard[name]
                    else:
                        full[rows.unsqueeze(1), cols.unsqueeze(0)] = shard[name]
            out[name] = full
        elif split is not None:
            full = torch.zeros_like(ref)
            for k, shard in enumerate(shards):
                full.index_copy_(split.dim, _index(split.groups[k]), shard[name])
            out[name] = full
        else:
            out[name] = shards[0][name]
    return out


def load_shards_into(model: nn.Module, folder: Path | str) -> nn.Module:
    """Load a shard folder into a freshly built dense model of the same architecture.

    The model is converted with the folder's partition (masks included) and loaded
    strictly; used by the hub and to check the round trip.
    """
    from disco_zoo.disco.adapters import apply_partition
    from disco_zoo.weights import load_strict

    part = _partition(load_folder_config(folder), folder)
    shards = [load_node_shard(folder, k)[1] for k in range(part.nodes)]
    apply_partition(model, part)
    try:
        state = assemble_state_dict(shards, part, model.state_dict())
    except (KeyError, RuntimeError, IndexError) as err:
        raise DiscoZooError(f"the shards in {folder} do not fit the architecture in its config.json "
                            f"({type(err).__name__}: {err})") from None
    load_strict(model, state, Path(folder))
    return model


def load_disco_model(folder: Path | str, config: FolderConfig | None = None, **kwargs: Any) -> nn.Module:
    """Build ``config.arch`` with ``config.args`` (``kwargs`` override) and load the shards.

    The architecture may be dense (``resnet18``) or a DISCO variant; either way the
    folder's partition replaces the builder's. Returns the model in eval mode.
    """
    config = config if config is not None else load_folder_config(folder)
    if config.kind != "disco":
        raise DiscoZooError(f"{folder}/config.json is not a DISCO model folder (kind {config.kind!r})")
    model = build_model(config.arch, **{**config.args, **kwargs})
    return load_shards_into(model, folder).eval()
