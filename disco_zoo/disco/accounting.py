"""Traffic, FLOPs, parameters and activation memory of a DISCO model, per node.

What is counted (bytes per inference, ``dtype_bytes`` per activation element):

* split conv/linear: node j sends node k its channels S_kj of the layer's input at the
  input's full spatial size (H*W for a conv, tokens for a linear). The first layer's
  input is the image, split by channels like any other input, so the image reaching
  the nodes is counted this way.
* reduce (classifier head): every node k != root sends its partial outputs
  (out_features per token) to root, which adds them and the bias.
* LayerNorm over split channels: each node sends its per-token partial sum and sum of
  squares (2 numbers per token) to every other node that holds channels of it.
* output gathers: every model output whose channels are split (``Partition.outputs``)
  is sent to the root, node k's channels at the output's size, under the tag
  ``output[.key]`` (:func:`~disco_zoo.disco.partition.output_tag`).
* a layer called more than once (a head shared across pyramid levels) has one split for
  every call; each call moves its own channels at its own input size and is counted
  under its own key (``name``, ``name@1``, ...; :func:`layer_shapes`), as the runtime
  tags it. Its FLOPs and activation peaks are those of all its calls.
* Nothing else moves: BatchNorm, activations, pooling, residual adds, grouped and
  depthwise convs (whole groups per node) and attention (whole heads per node) are local.
* The image itself lives on rank 0 (one camera): rank 0 sends node k its channels I_k of
  the first layer's input under the tag ``"input"``. A model with pre/post-processing
  stages (:mod:`disco_zoo.graph.stages`, e.g. a detector's resize and normalisation,
  box decoding and NMS) runs them on rank 0 alone: what is scattered is the core's
  input, at :func:`~disco_zoo.graph.stages.core_input_shape`, and nothing of the stages
  moves. These bytes are counted apart
  (:func:`input_pair_bytes`, ``DiscoAccounting.input_bytes_per_pair``) so that
  ``disco_bytes`` stays comparable with the dense baseline's layer exchanges;
  :func:`wire_bytes_per_pair` is both together, exactly what the runtime counts.

``dense_tp_bytes`` is :func:`disco_zoo.graph.accounting.dense_tp_traffic` on the same
model, i.e. dense within-layer parallelism with the same node count and ratios.

FLOPs follow ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add, bias
and elementwise ops not counted). A conv/linear costs the same per open weight entry
(o, c), so node k's share of a layer's dense FLOPs is the fraction of mask entries
in its rows that are open (reduce layers: its columns). A grouped conv's FLOPs go to the nodes by the
output channels (whole groups) they compute. FLOPs outside conv/linear (attention
matmuls) are split by the node's share of the ``ratios``.

Peak activation memory per node is an estimate: the largest per-layer working set
(the input channels the node holds or receives plus the outputs it computes), in
bytes; tensors kept alive across layers (residual operands) are not added.

Parameters per node are the numels of the parameters in that node's shard
(:mod:`disco_zoo.disco.shards`); replicated tensors count on every node. Their bytes
follow the shard's storage dtype (fp16 and int8 storage keep vectors in fp32; int8 adds
one fp32 scale per output channel; see :mod:`disco_zoo.weight_storage`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from disco_zoo.disco.adapters import get_partition
from disco_zoo.disco.partition import LayerSplit, Partition, call_key, layer_of, output_key, output_tag
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.stages import at_input_shape, before_core, core_input_shape, core_of

__all__ = [
    "DiscoAccounting", "disco_accounting", "disco_traffic", "layer_pair_bytes", "layer_shapes", "channel_bytes",
    "input_pair_bytes", "wire_bytes_per_pair", "gather_pair_bytes", "calls_of", "call_shares",
    "layer_channel_bytes",
]

Pairs = dict[tuple[int, int], int]


def _pair_keys(pairs: Pairs) -> dict[str, int]:
    return {f"{j}->{k}": b for (j, k), b in sorted(pairs.items())}


@dataclass(frozen=True)
class DiscoAccounting:
    """What one inference of a DISCO model costs, per node and per ordered pair."""

    input_shape: tuple[int, ...]
    dtype_bytes: int
    disco_bytes: int  # layer exchanges, every pair, the image scatter apart
    dense_tp_bytes: int  # dense within-layer parallelism, same nodes and ratios
    bytes_per_pair: Pairs  # (sender, receiver) -> layer-exchange bytes
    bytes_per_layer: dict[str, int]
    input_bytes_per_pair: Pairs  # rank 0's image scatter, tag "input"
    flops_total: int
    flops_dense: int
    flops_per_node: list[int]
    flops_per_entry: dict[str, float]  # layer -> FLOPs of one (output, input) weight entry, all its calls
    params_per_node: list[int]
    params_dense: int
    params_bytes_per_node: list[int]  # by the storage dtype
    act_peak_per_node: list[int]  # bytes

    @property
    def traffic_ratio(self) -> float:
        return self.disco_bytes / self.dense_tp_bytes if self.dense_tp_bytes else 0.0

    @property
    def wire_bytes_per_pair(self) -> Pairs:
        """Everything the runtime puts on the wire: layer exchanges plus the image scatter."""
        return _add_pairs(self.bytes_per_pair, self.input_bytes_per_pair)

    def to_json(self) -> dict[str, Any]:
        """JSON form (pairs keyed ``"j->k"``), the keys eval results and ``info --json`` use."""
        return {
            "input_size": self.input_shape[-1],
            "disco_bytes": self.disco_bytes,
            "dense_tp_bytes": self.dense_tp_bytes,
            "traffic_ratio": self.traffic_ratio,
            "bytes_per_pair": _pair_keys(self.bytes_per_pair),
            "input_bytes_per_pair": _pair_keys(self.input_bytes_per_pair),
            "flops_dense": self.flops_dense,
            "flops_total": self.flops_total,
            "flops_per_node": list(self.flops_per_node),
            "params_per_node": list(self.params_per_node),
            "params_dense": self.params_dense,
            "params_bytes_per_node": list(self.params_bytes_per_node),
            "act_peak_per_node": list(self.act_peak_per_node),
        }


def _add_pairs(a: Pairs, b: Pairs) -> Pairs:
    out = dict(a)
    for pair, count in b.items():
        out[pair] = out.get(pair, 0) + count
    return out


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of every call of every module the partition names, from
    one forward pass, in the order they run, keyed by call (:func:`call_key`: a layer's
    name for its first call, ``name@1``, ... for a layer shared across pyramid levels);
    then every gathered model output under its tag (``output[.key]``). A model with
    pre/post-processing stages runs its pre-processing (configured for ``input_shape``:
    :func:`~disco_zoo.graph.stages.at_input_shape`), then its core (what is split)."""
    part = get_partition(model)
    modules = dict(model.named_modules())
    seen: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}
    order: list[str] = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            calls = seen.setdefault(name, [])
            order.append(call_key(name, len(calls)))
            calls.append((tuple(args[0].shape), tuple(out.shape)))

        return hook

    names = [*part.layers, *part.norms, *part.grouped]
    hooks = [modules[name].register_forward_hook(record(name)) for name in names]
    was_training = model.training
    try:
        with torch.no_grad(), at_input_shape(model, input_shape):
            x, _ = before_core(model.eval(), torch.zeros(input_shape, device=next(model.parameters()).device))
            out = core_of(model)(x)  # the core's outputs are what the partition gathers
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    _check_calls(part, {name: len(calls) for name, calls in seen.items()})
    shapes: dict[str, Any] = {key: seen[layer_of(key)][_call_index(key)] for key in order}
    from torch.utils._pytree import tree_flatten_with_path

    leaves = {output_key(path): tuple(leaf.shape) for path, leaf in tree_flatten_with_path(out)[0]
              if isinstance(leaf, torch.Tensor)}  # a core may also return sizes (a detector's level sizes)
    for gather in part.outputs:
        shapes[output_tag(gather.key)] = (leaves[gather.key], leaves[gather.key])
    return shapes


def _call_index(key: str) -> int:
    """0 for a layer's first call (its bare name), i for ``name@i``."""
    return int(key[len(layer_of(key)) + 1:] or 0)


def _check_calls(part: Partition, counted: dict[str, int]) -> None:
    """The forward calls every layer as often as its split says: each call exchanges its own
    messages, so a partition written for another call count would not match the wire."""
    for name, layer in part.layers.items():
        if counted.get(name, 0) != layer.calls:
            raise DiscoZooError(f"layer {name!r} ran {counted.get(name, 0)} time(s) in one forward but its partition "
                                f"says {layer.calls}; rebuild the partition from this model (to_disco)")
    for name in part.norms:
        if counted.get(name, 0) > 1:
            raise DiscoZooError(f"split norm {name!r} ran {counted[name]} times in one forward; a split LayerNorm "
                                "exchanges its statistics once per forward (give each call its own norm)")


def calls_of(shapes: dict[str, Any], name: str) -> list[str]:
    """The call keys of layer/norm/grouped conv ``name`` in ``shapes`` (see :func:`layer_shapes`)."""
    return [key for key in shapes if layer_of(key) == name]


def _per_channel(shape: tuple[int, ...], channels: int) -> int:
    """Elements per channel: spatial positions (conv) or tokens (linear / norm)."""
    numel = 1
    for s in shape:
        numel *= s
    return numel // channels


def channel_bytes(layer: LayerSplit, in_shape: tuple[int, ...], dtype_bytes: int) -> int:
    """Bytes one input channel of ``layer`` costs on the wire (what every S_kj entry moves)."""
    return _per_channel(in_shape, layer.in_channels) * dtype_bytes


def layer_channel_bytes(layer: LayerSplit, shapes: dict[str, Any], dtype_bytes: int) -> int:
    """Bytes one input channel of ``layer`` costs on the wire over all its calls: what
    closing one S_kj entry saves (a layer shared across pyramid levels moves it at each)."""
    return sum(channel_bytes(layer, shapes[key][0], dtype_bytes) for key in calls_of(shapes, layer.name))


def input_pair_bytes(partition: Partition, input_shape: tuple[int, ...], dtype_bytes: int) -> Pairs:
    """Rank 0's image scatter: node k != 0 receives its channels I_k of the first layer's input."""
    first = next(iter(partition.layers.values()))
    per = channel_bytes(first, tuple(input_shape), dtype_bytes)
    return {(0, k): len(first.in_groups[k]) * per for k in range(1, partition.nodes) if first.in_groups[k]}


def wire_bytes_per_pair(partition: Partition, shapes: dict[str, Any], input_shape: tuple[int, ...],
                        dtype_bytes: int) -> Pairs:
    """Bytes per (sender, receiver) of one inference as the runtime counts them: the layer
    exchanges of :func:`disco_traffic` plus the image scatter."""
    return _add_pairs(disco_traffic(partition, shapes, dtype_bytes)[1], input_pair_bytes(partition, input_shape, dtype_bytes))


def layer_pair_bytes(
    layer: LayerSplit, in_shape: tuple[int, ...], out_shape: tuple[int, ...], dtype_bytes: int
) -> dict[tuple[int, int], int]:
    """Bytes (sender, receiver) -> count for one conv/linear."""
    pairs: dict[tuple[int, int], int] = {}
    if layer.mode == "reduce":
        per = _per_channel(out_shape, layer.out_channels) * layer.out_channels * dtype_bytes
        for k in range(layer.nodes):
            if k != layer.root and layer.in_groups[k]:
                pairs[(k, layer.root)] = per
        return pairs
    per = channel_bytes(layer, in_shape, dtype_bytes)
    for k in range(layer.nodes):
        for j in range(layer.nodes):
            if j != k and layer.selected[k][j]:
                pairs[(j, k)] = len(layer.selected[k][j]) * per
    return pairs


def norm_pair_bytes(groups: list[list[int]], in_shape: tuple[int, ...], dtype_bytes: int) -> dict[tuple[int, int], int]:
    """A split LayerNorm: 2 numbers per token between every two nodes holding channels."""
    channels = sum(len(g) for g in groups)
    per = 2 * _per_channel(in_shape, channels) * dtype_bytes
    holders = [k for k, g in enumerate(groups) if g]
    return {(j, k): per for j in holders for k in holders if j != k}


def gather_pair_bytes(groups: list[list[int]], root: int, shape: tuple[int, ...], dtype_bytes: int) -> Pairs:
    """An output gather: node k != root sends its channels of the output to root."""
    per = _per_channel(shape, sum(len(g) for g in groups)) * dtype_bytes
    return {(k, root): len(g) * per for k, g in enumerate(groups) if k != root and g}


def disco_traffic(
    partition: Partition, shapes: dict[str, Any], dtype_bytes: int
) -> tuple[dict[str, int], dict[tuple[int, int], int]]:
    """(bytes per exchange, bytes per (sender, receiver)) for one inference. An exchange is
    a layer's or norm's call, keyed as in ``shapes`` (the name; ``name@i`` for the later
    calls of a shared layer), or an output tag: the keys the runtime's tags carry."""
    per_layer: dict[str, int] = {}
    per_pair: dict[tuple[int, int], int] = {}
    items = [(key, layer_pair_bytes(partition.layers[name], *shapes[key], dtype_bytes))
             for name in partition.layers for key in calls_of(shapes, name)]
    items += [(n, norm_pair_bytes(s.groups, shapes[n][0], dtype_bytes)) for n, s in partition.norms.items()]
    for gather in partition.outputs:
        tag = output_tag(gather.key)
        items.append((tag, gather_pair_bytes(gather.groups, gather.root, shapes[tag][0], dtype_bytes)))
    for name, pairs in items:
        per_layer[name] = sum(pairs.values())
        for pair, count in pairs.items():
            per_pair[pair] = per_pair.get(pair, 0) + count
    return per_layer, per_pair


def _open_fraction(layer: LayerSplit, k: int) -> float:
    """Share of the layer's weight entries (o, c) that node k multiplies."""
    if layer.mode == "reduce":
        return len(layer.in_groups[k]) / layer.in_channels
    return len(layer.out_groups[k]) * len(layer.columns(k)) / (layer.out_channels * layer.in_channels)


def _act_peak(part: Partition, shapes: dict[str, Any], k: int, dtype_bytes: int) -> int:
    """Node k's largest per-call working set: the input channels it holds or receives plus
    the outputs it computes, over every call of every layer and grouped conv."""
    peak = 0
    for key, (in_shape, out_shape) in shapes.items():
        name = layer_of(key)
        if name in part.layers:
            layer = part.layers[name]
            held = len(layer.columns(k)) * _per_channel(in_shape, layer.in_channels)
            made = len(layer.rows(k)) * _per_channel(out_shape, layer.out_channels)
        elif name in part.grouped:
            grouped = part.grouped[name]
            held = len(grouped.in_groups[k]) * _per_channel(in_shape, in_shape[1])
            made = len(grouped.out_groups[k]) * _per_channel(out_shape, out_shape[1])
        else:
            continue
        peak = max(peak, (held + made) * dtype_bytes)
    return peak


def call_shares(part: Partition, shapes: dict[str, Any]) -> dict[str, float]:
    """Each call's share of its layer's FLOPs (1.0 for a layer called once). A conv/linear
    weight entry costs the same per output position (conv) or token (linear) in every
    call, so a call's share is its output positions over all the calls' together."""
    shares: dict[str, float] = {}
    for name, layer in part.layers.items():
        keys = calls_of(shapes, name)
        positions = [_per_channel(shapes[key][1], layer.out_channels) for key in keys]
        total = sum(positions)
        shares.update({key: p / total if total else 1.0 / len(keys) for key, p in zip(keys, positions)})
    return shares


def disco_accounting(
    model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 224, 224), dtype_bytes: int = 4,
    storage_dtype: str | None = None,
) -> DiscoAccounting:
    """Bytes, FLOPs, parameters and activation memory of a DISCO model for one input.

    ``storage_dtype`` ('fp32' | 'fp16' | 'int8') sizes the shards' parameters; by default the
    model's own (its ``pretrained_cfg``), else fp32. See the module docstring for
    exactly what is counted.
    """
    from disco_zoo.disco.shards import node_state_dict
    from disco_zoo.graph import trace_model
    from disco_zoo.graph.accounting import dense_tp_traffic
    from disco_zoo.weight_storage import stored_bytes

    part = get_partition(model)
    n = part.nodes
    input_shape = tuple(input_shape)
    if storage_dtype is None:
        storage_dtype = getattr(getattr(model, "pretrained_cfg", None), "storage_dtype", "fp32")
    shapes = layer_shapes(model, input_shape)
    per_layer, per_pair = disco_traffic(part, shapes, dtype_bytes)
    was_training = model.training
    graph = trace_model(model, input_shape, dtype_bytes)  # puts the model in eval mode
    model.train(was_training)
    dense = dense_tp_traffic(graph, n, dtype_bytes, part.ratios)

    layer_flops: dict[str, int] = {}  # module -> FLOPs of all its calls
    for call in graph.of_op("conv", "linear"):
        layer_flops[call.target] = layer_flops.get(call.target, 0) + call.flops
    other = graph.total_flops - sum(layer_flops.values())
    share = [r / sum(part.ratios) for r in part.ratios]
    flops = [other * share[k] for k in range(n)]
    for name, layer in part.layers.items():
        for k in range(n):
            flops[k] += layer_flops[name] * _open_fraction(layer, k)
    for name, grouped in part.grouped.items():  # whole groups: a node's share is its output channels
        out_channels = sum(len(g) for g in grouped.out_groups)
        for k in range(n):
            flops[k] += layer_flops[name] * len(grouped.out_groups[k]) / out_channels

    state = model.state_dict()
    param_names = {name for name, _ in model.named_parameters()}
    params, params_bytes, peaks = [], [], []
    for k in range(n):
        tensors = {name: t for name, t in node_state_dict(state, part, k).items() if name in param_names}
        params.append(sum(t.numel() for t in tensors.values()))
        params_bytes.append(sum(stored_bytes(t, storage_dtype) for t in tensors.values()))
        peaks.append(_act_peak(part, shapes, k, dtype_bytes))

    return DiscoAccounting(
        input_shape=input_shape,
        dtype_bytes=dtype_bytes,
        disco_bytes=sum(per_pair.values()),
        dense_tp_bytes=dense.total,
        bytes_per_pair=per_pair,
        bytes_per_layer=per_layer,
        input_bytes_per_pair=input_pair_bytes(part, core_input_shape(model, input_shape), dtype_bytes),
        flops_total=int(round(sum(flops))),
        flops_dense=graph.total_flops,
        flops_per_node=[int(round(f)) for f in flops],
        flops_per_entry={n: layer_flops[n] / (l.out_channels * l.in_channels) for n, l in part.layers.items()},
        params_per_node=params,
        params_dense=sum(p.numel() for p in model.parameters()),
        params_bytes_per_node=params_bytes,
        act_peak_per_node=peaks,
    )
