"""Export a DISCO model as one ONNX program per node: segments, a JSON program, hashes.

Node k's folder (``OUT/node{k}/``) is everything a device needs to run its part with
onnxruntime and no torch: ``seg000.onnx`` ... (the compute between two exchanges, in
order, weights inside), ``program.json`` (steps, messages, shapes, the output, and the
sha256 of every segment and of the shard it was exported from), the model's
``config.json`` and ``SHA256SUMS`` (``sha256sum -c`` format, every file but itself).

The node model is the torch executor's own (:func:`build_node_model`) traced over a
recording transport, so the program's messages are the executor's, in its order, under
its tags; the byte counts therefore equal the accounting's by construction, which the
tests check on the wire.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten_with_path

from disco_zoo.edge.program import PROGRAM_FORMAT, PROGRAM_NAME, SUMS_NAME, partition_digest
from disco_zoo.disco.partition import output_key
from disco_zoo.errors import DiscoZooError
from disco_zoo.export.fold import fold_sum_batch_norms
from disco_zoo.export.segments import SplitGraph, split_graph
from disco_zoo.export.tracing import TracingTransport
from disco_zoo.graph.stages import core_input_shape, core_of, has_stages, set_input_shape
from disco_zoo.store import CONFIG_NAME, load_folder_config, read_config, sha256_file, shard_file_name, write_folder_atomically

__all__ = ["export_onnx", "export_node", "OPSET"]

OPSET = 18


class _NodeGraph(nn.Module):
    """Node k's inference as the executor runs it (input scatter, node model, output
    gathers), with the exchange token threaded through, so that torch.export sees every
    message in order.

    A model with stages (a detector: :mod:`disco_zoo.graph.stages`) is exported as its
    split core only: the program's input is the pre-processed image and its outputs are
    the core's tensors (a detector's head outputs), keyed by their place in the core's
    output. Its pre-processing, box decoding and NMS are torchvision code that needs
    torch; they run on a torch rank 0 (``--engine torch,onnx``)."""

    def __init__(self, model: nn.Module, transport: TracingTransport, part: Any, core_shape: list[int]) -> None:
        super().__init__()
        from disco_zoo.runtime.disco_executor import disco_tags

        self.staged = has_stages(model)
        self.core, self.transport, self.part, self.core_shape = core_of(model), transport, part, core_shape
        self.first, self.tags = next(iter(part.layers.values())), disco_tags(part)

    def forward(self, token: torch.Tensor, *image: torch.Tensor) -> tuple[Any, torch.Tensor]:
        from disco_zoo.runtime.disco_executor import gather_outputs, scatter_input

        self.transport.token = token
        x = scatter_input(self.transport, image[0] if image else None, self.first, self.core_shape)
        out = gather_outputs(self.transport, self.part, self.core(x), self.tags)
        return (_tensor_leaves(out) if self.staged else out), self.transport.token


def _tensor_leaves(out: Any) -> dict[str, torch.Tensor]:
    """A core's output tensors by their key (:func:`output_key`); its other leaves (a
    detector's pyramid level sizes) are metadata fixed by the input shape."""
    leaves, _ = tree_flatten_with_path(out)
    return {output_key(path): leaf for path, leaf in leaves if isinstance(leaf, torch.Tensor)}


def _output_structure(spec: Any) -> dict[str, Any] | None:
    """How the node model wraps its output tensors (torchvision's segmenters return
    ``OrderedDict(out=...)``, a staged core's tensors are a dict), from torch.export's
    output spec, so that the lean runner reports the structure the torch engine does; None
    for a bare tensor. ``dict`` is the key of one tensor, or the list of several keys."""
    model_out = spec.child(0)
    if model_out.type in (dict, OrderedDict):
        keys = [str(k) for k in model_out.context]
        if any(model_out.child(i).type is not None for i in range(len(keys))):
            raise DiscoZooError("the onnx export takes a model output of tensors or a flat dict of them; "
                                f"this one nests containers under {keys}")
        return {"dict": keys[0] if len(keys) == 1 else keys, "ordered": model_out.type is OrderedDict}
    return None


def _trace(folder: Path, k: int, input_shape: list[int]) -> tuple[SplitGraph, Any, dict[str, Any] | None, bool]:
    from disco_zoo.runtime.disco_executor import build_node_model

    config = load_folder_config(folder)
    transport = TracingTransport(k, config.nodes)
    model, part = build_node_model(folder, transport)
    set_input_shape(model, input_shape)  # a staged model's pre-processing runs at the program's size
    core_shape = list(core_input_shape(model, input_shape))
    args = (torch.zeros(1),) + ((torch.zeros(core_shape),) if k == 0 else ())
    module = _NodeGraph(model, transport, part, core_shape)
    with torch.no_grad():
        try:
            program = torch.export.export(module, args)
        except Exception as err:  # what torch.export cannot trace, named in one line
            raise DiscoZooError(f"{config.name}: node {k} cannot be traced for export: "
                                f"{type(err).__name__}: {str(err).splitlines()[0]}") from err
    gm = program.module()
    fold_sum_batch_norms(gm)
    return split_graph(gm, transport.records), part, _output_structure(program.call_spec.out_spec), module.staged


def _export_segment(module: nn.Module, examples: list[torch.Tensor], inputs: list[str], outputs: list[str],
                    path: Path) -> None:
    """One segment to ONNX (TorchScript exporter: fast and exact for these graphs), checked."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
        torch.onnx.export(module, tuple(examples), str(path), dynamo=False, opset_version=OPSET,
                          input_names=inputs, output_names=outputs, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def _initializer_sizes(path: Path) -> tuple[int, int]:
    """(elements, bytes) of a segment's float initializers: the weights the runner will hold."""
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    arrays = [a for a in arrays if a.dtype.kind == "f"]  # index lists are not weights
    return sum(a.size for a in arrays), sum(a.nbytes for a in arrays)


def export_node(folder: Path, k: int, out: Path, input_shape: list[int]) -> dict[str, Any]:
    """Write node k's segments and program into ``out`` (a fresh directory); the program."""
    graph, part, structure, staged = _trace(folder, k, input_shape)
    segments = []
    for i, seg in enumerate(graph.segments):
        name = f"seg{i:03d}.onnx"
        _export_segment(seg.module, seg.examples, seg.inputs, seg.outputs, out / name)
        params, nbytes = _initializer_sizes(out / name)
        segments.append({"file": name, "sha256": sha256_file(out / name), "inputs": seg.inputs, "outputs": seg.outputs,
                         "params": params, "weight_bytes": nbytes})
    raw = read_config(folder)
    shard = next((f for f in raw.get("files", []) if f["name"] == shard_file_name(k)), None)
    if shard is None:
        raise DiscoZooError(f"{folder}/config.json lists no {shard_file_name(k)}: cannot name the shard node {k} runs")
    output_rank = next((l.root for l in part.layers.values() if l.mode == "reduce"), 0)
    image = graph.inputs[0] if graph.inputs else None
    return {
        "format": PROGRAM_FORMAT, "model": load_folder_config(folder).name, "node": k, "nodes": part.nodes,
        "output_rank": output_rank, "input_shape": list(input_shape), "image": image, "output": graph.output,
        "output_structure": structure, "stages": staged,
        "shard": {"name": shard["name"], "sha256": shard["sha256"], "size": shard["size"]},
        "partition_sha256": partition_digest(raw["partition"]), "opset": OPSET,
        "segments": segments, "steps": graph.steps, "values": graph.values,
    }


def _write_sums(folder: Path) -> None:
    """``SHA256SUMS`` over every other file, in ``sha256sum -c`` format."""
    lines = [f"{sha256_file(p)}  {p.name}" for p in sorted(folder.iterdir()) if p.is_file() and p.name != SUMS_NAME]
    (folder / SUMS_NAME).write_text("\n".join(lines) + "\n")


def export_onnx(folder: Path | str, out: Path | str, input_shape: list[int] | None = None) -> list[Path]:
    """Export every node of the DISCO folder ``folder`` to ``out/node{k}``; their paths.

    ``input_shape`` (default: batch 1 at the config's input size) is fixed in the
    program: ONNX segments are exported for one shape. Every node is exported to a
    staging folder first, then each is swapped in atomically, so a failed export leaves
    ``out`` as it was."""
    import tempfile

    folder, out = Path(folder), Path(out)
    try:
        import onnx  # noqa: F401  (the checker; torch's exporter writes the files)
    except ImportError:
        raise DiscoZooError("export --format onnx needs the onnx package: pip install 'disco-zoo[edge]'") from None
    config = load_folder_config(folder)
    if config.kind != "disco":
        raise DiscoZooError(f"{folder} holds a {config.kind} model; export takes a DISCO folder or model "
                            "(e.g. resnet18-disco-2node)")
    shape = list(input_shape or [1, *config.input_size])
    raw = read_config(folder)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        for k in range(config.nodes):
            (staging / f"node{k}").mkdir()
            program = export_node(folder, k, staging / f"node{k}", shape)
            (staging / f"node{k}" / PROGRAM_NAME).write_text(json.dumps(program, indent=1) + "\n")
        written = []
        for k in range(config.nodes):
            def write(tmp: Path, k: int = k) -> dict[str, Any]:
                for path in (staging / f"node{k}").iterdir():
                    path.rename(tmp / path.name)
                # the store writes config.json last, byte for byte as here (no .safetensors:
                # "files" is empty), so SHA256SUMS covers it too
                node_config = {**{key: v for key, v in raw.items() if key != "files"},
                               "source_files": raw.get("files", []), "onnx_program": PROGRAM_NAME, "files": []}
                (tmp / CONFIG_NAME).write_text(json.dumps(node_config, indent=1, sort_keys=True) + "\n")
                _write_sums(tmp)
                return node_config

            written.append(write_folder_atomically(out / f"node{k}", write))
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return written
