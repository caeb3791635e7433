"""The one shell both executors (DISCO and EdgeFlow) run in.

Why: what is not the executor's own business must be the same for both, or their
measurements stop being comparable. Here, once:

* **input**: :func:`seeded_input` / :func:`load_input`; the same shape and seed give
  DISCO and EdgeFlow the same image;
* **tags**: :func:`unique_tags` turns a run's message names into string tags whose
  backend ids (:func:`~disco_zoo.runtime.transport.tag_id`) are all different, so two
  messages pending at once can never be matched to each other's receive;
* **the output rank**: an executor declares which rank holds the output by building its
  per-rank report with :func:`rank_report` (every rank names the output rank; only that
  rank carries the output, under :data:`OUTPUT_KEY`, encoded by :func:`encode_output`:
  raw array bytes in base64, not nested lists, so a segmentation map or a
  super-resolved image costs 1.33 bytes per byte, and the model's structure, a tensor,
  tuple or dict, is kept);
* **launch and merge**: :func:`run_entry` launches an entry and :func:`merge_results`
  merges every rank's byte counters and picks the output from the output rank.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, TypeVar

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.runtime.launch import launch
from disco_zoo.runtime.transport import ByteCounter, Transport, tag_id

__all__ = ["OUTPUT_KEY", "RunResult", "seeded_input", "load_input", "unique_tags", "rank_report", "merge_results",
           "run_entry", "encode_output", "decode_output"]

OUTPUT_KEY = "logits"  # the output rank's report holds the model output (encode_output) under this key
K = TypeVar("K", bound=Hashable)


def seeded_input(shape: list[int] | tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The run's input: standard normal values from a generator seeded with ``seed``
    (its own generator, so the model's weights, drawn from the global one, do not shift it)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def load_input(input_path: str | None, shape: list[int] | tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The input a user gave (a ``.npy`` of exactly ``shape``), else :func:`seeded_input`."""
    if not input_path:
        return seeded_input(shape, seed)
    import numpy as np

    try:
        x = torch.from_numpy(np.load(input_path)).float()
    except (OSError, ValueError) as err:
        raise DiscoZooError(f"cannot read input {input_path}: {err}; give a .npy array of shape {list(shape)}") from err
    if list(x.shape) != list(shape):
        raise DiscoZooError(f"{input_path} holds shape {list(x.shape)}, expected {list(shape)}")
    return x


def unique_tags(labels: Mapping[K, str]) -> dict[K, str]:
    """A string tag per key, the key's label where its backend id is still free, else the
    label with a salt (``label#1``, ...). Keys are taken in order, so the first of two
    colliding labels keeps its name (the transport counts bytes per tag name)."""
    tags: dict[K, str] = {}
    used: set[int] = set()
    for key, label in labels.items():
        salt, tag = 0, label
        while tag_id(tag) in used:
            salt += 1
            tag = f"{label}#{salt}"
        used.add(tag_id(tag))
        tags[key] = tag
    return tags


def encode_output(output: Any) -> Any:
    """A model output for a JSON report: every tensor as ``{"array": base64 of its bytes,
    "dtype", "shape"}``, inside ``{"dict": ...}`` / ``{"tuple": [...]}`` for structures."""
    import base64

    import numpy as np

    if isinstance(output, torch.Tensor):
        array = np.ascontiguousarray(output.detach().cpu().numpy())
        return {"array": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": str(array.dtype),
                "shape": list(array.shape)}
    if isinstance(output, dict):  # torchvision's segmenters return an OrderedDict
        return {"dict": {str(k): encode_output(v) for k, v in output.items()},
                "ordered": isinstance(output, OrderedDict)}
    if isinstance(output, (tuple, list)):
        return {"tuple": [encode_output(v) for v in output]}
    raise DiscoZooError(f"a model output of type {type(output).__name__} cannot be reported; return tensors, "
                        "tuples or dicts of tensors")


def decode_output(value: Any) -> Any:
    """:func:`encode_output`'s inverse, as torch tensors (nested lists, as the lean ONNX
    runner writes them, become one tensor)."""
    import base64

    import numpy as np

    if isinstance(value, list):
        return torch.tensor(value)
    if "array" in value:
        raw = base64.b64decode(value["array"])
        return torch.from_numpy(np.frombuffer(raw, dtype=value["dtype"]).reshape(value["shape"]).copy())
    if "dict" in value:
        items = {k: decode_output(v) for k, v in value["dict"].items()}
        return OrderedDict(items) if value.get("ordered") else items
    return tuple(decode_output(v) for v in value["tuple"])


def rank_report(t: Transport, output_rank: int, output: Any, **fields: Any) -> dict[str, Any]:
    """A rank's result: its rank, the run's output rank, its byte counter, ``fields``,
    and on the output rank the output."""
    report: dict[str, Any] = {"rank": t.rank, "output_rank": output_rank, **fields, "bytes": t.counter.to_dict()}
    if t.rank == output_rank:
        if output is None:
            raise DiscoZooError(f"rank {t.rank} is the output rank but computed no output")
        report[OUTPUT_KEY] = encode_output(output)
    return report


@dataclass
class RunResult:
    """A launch's reports merged: every rank's, the bytes of all of them, the output."""

    per_rank: list[dict[str, Any]]
    bytes: dict[str, Any]  # ByteCounter.merge: {"pairs": {(src, dst): n}, "tags": {tag: n}}
    output: Any  # the model's output structure (tensor, tuple or dict) of torch tensors
    output_rank: int

    @property
    def bytes_total(self) -> int:
        return sum(self.bytes["pairs"].values())


def merge_results(results: list[dict[str, Any]]) -> RunResult:
    """Merge :func:`rank_report` results: every rank's counters, the output rank's output."""
    ranks = {r["output_rank"] for r in results}
    if len(ranks) != 1:
        raise DiscoZooError(f"the ranks disagree on which holds the output: {sorted(ranks)}")
    (output_rank,) = ranks
    holder = next(r for r in results if r["rank"] == output_rank)
    return RunResult(results, ByteCounter.merge([r["bytes"] for r in results]), decode_output(holder[OUTPUT_KEY]),
                     output_rank)


def run_entry(entry: str, world_size: int, backend: str = "mpi", args: dict[str, Any] | None = None,
              **launch_kwargs: Any) -> RunResult:
    """Launch ``entry`` (an executor's launch entry) and merge its ranks' reports."""
    return merge_results(launch(entry, world_size, backend, args=args, **launch_kwargs))
