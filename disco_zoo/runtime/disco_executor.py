"""Run a DISCO model split across ranks: each rank holds only its own shard.

Rank k builds the architecture on the meta device (no weights allocated), loads its
``node{k}.safetensors`` through ``safe_open`` (memory-mapped) and swaps every conv/linear
the partition names for a module that computes

    Y_k = W[O_k, I_k] X_k + sum_{j != k} W[O_k, S_kj] X[S_kj]

(minus the own channels ``dropped[k]`` that compute pruning removed from the diagonal
block; node k still holds and sends them)

exchanging exactly the channels the partition selects: it posts the receives of
X[S_kj] and the sends of its own channels to the peers that need them, computes the
diagonal block while those are in flight, then adds the off-diagonal terms. Every other
module runs the model's own forward on the rank's local channels (BatchNorm on its
slice, activations, pooling, residual adds: the partition keeps them local). The
classifier head is a reduce layer: every rank computes partial logits W[:, I_k] X_k and
rank ``root`` adds them and the bias.

The input image lives on rank 0 (one camera); rank 0 sends node k its channels of the
first layer's input, I_k, under the tag ``"input"``. Everything else that moves is what
:func:`disco_zoo.disco.accounting.disco_traffic` predicts, message for message.

LayerNorms over split channels (ViT, Swin) exchange per-token partial sums and sums of
squares; attention runs the node's own heads (Swin: with its rows of the relative
position bias table; patch merging is local, its norm and reduction are split layers).
Grouped and depthwise convs compute their own whole groups (the module's ``groups`` is set
to the node's count; its weight slice is in the shard) and send nothing. After the
forward, every model output whose channels are split is gathered on the root
(:func:`gather_outputs`, tag ``output[.key]``); the output keeps the model's structure
(a tensor, tuple or dict). A layer called several times in one forward (a head shared
across pyramid levels) exchanges its own messages at each call, under the call's tag
(``name``, ``name@1``, ...). A layer the executor has no node computation for fails,
naming it, when the node model is built.

A model with pre/post-processing stages (:mod:`disco_zoo.graph.stages`; a detector's
transform before its backbone, its anchors, box decoding and NMS after its heads) runs
them on rank 0 around its split core: rank 0 pre-processes the image and scatters the
core's input, every rank runs the core, and rank 0 post-processes the gathered outputs,
so the output is the model's own (detections). The stages move nothing.

Input, tags, the output rank and result merging are the session's
(:mod:`disco_zoo.runtime.session`), shared with the EdgeFlow executor.
"""
from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten_with_path, tree_unflatten

from disco_zoo.disco.partition import GroupedSplit, LayerSplit, OutputGather, Partition, output_key, output_tag
from disco_zoo.disco.shards import read_node_shard
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.stages import after_core, before_core, core_input_shape, core_of, has_stages, set_input_shape
from disco_zoo.registry import build_model
from disco_zoo.runtime.session import load_input, rank_report, unique_tags
from disco_zoo.runtime.transport import Transport
from disco_zoo.store import load_folder_config

__all__ = [
    "DiscoSplitLayer", "DiscoReduceLayer", "DiscoLayerNorm", "build_node_model", "load_node", "inference_fn",
    "run_disco", "node_folder", "scatter_input", "gather_outputs", "current_rss_bytes", "disco_tags", "output_rank",
    "INPUT_TAG", "reset_calls",
]

INPUT_TAG = "input"


def _index(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def _layer_fn(module: nn.Module) -> tuple[Callable[..., torch.Tensor], int]:
    """(function(x, weight, bias), channel dim) reproducing a conv/linear's forward."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise DiscoZooError(f"conv with groups={module.groups}, padding_mode={module.padding_mode!r} is not supported")
        stride, padding, dilation = module.stride, module.padding, module.dilation
        return (lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation)), 1
    if isinstance(module, nn.Linear):
        return F.linear, -1
    raise DiscoZooError(f"partition layer is a {type(module).__name__}, expected a conv or linear")


class _Calls:
    """The tag of each call of a layer: a layer shared across pyramid levels runs once per
    level in one forward, and each call exchanges its own messages under its own tag
    (``split.call_keys()``, through the session's tag policy). The calls come in the same
    order every forward, so the layer steps through its tags and wraps around."""

    def _init_calls(self, split: LayerSplit, tag: str | Sequence[str] | None) -> None:
        tags = [tag] if isinstance(tag, str) else list(tag or split.call_keys())
        if len(tags) != split.calls:
            raise DiscoZooError(f"{split.name}: {len(tags)} tag(s) for {split.calls} call(s)")
        self.tags, self.call = tags, 0

    @property
    def tag(self) -> str:
        """The tag of the call about to run (or running)."""
        return self.tags[self.call]

    def _next_call(self) -> None:
        if len(self.tags) > 1:  # a layer called once keeps no state between forwards
            self.call = (self.call + 1) % len(self.tags)


def reset_calls(model: nn.Module) -> Callable[[], None]:
    """A function that starts every shared layer at its first call (run before each
    inference); the layers are found once, not on every inference."""
    shared = [m for m in model.modules() if isinstance(m, _Calls) and len(m.tags) > 1]

    def reset() -> None:
        for module in shared:
            module.call = 0

    return reset


class DiscoSplitLayer(_Calls, nn.Module):
    """Node k's part of a split conv/linear: diagonal block + received channels."""

    def __init__(self, split: LayerSplit, k: int, transport: Transport, like: nn.Module,
                 weight: torch.Tensor, bias: torch.Tensor | None, tag: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.name, self.k, self.transport = split.name, k, transport
        self._init_calls(split, tag)
        self.fn, self.dim = _layer_fn(like)
        self.out_channels, self.out_local = split.out_channels, len(split.out_groups[k])
        position = {c: i for i, c in enumerate(split.columns(k))}
        own = split.in_groups[k]
        kept = [c for c in own if c in position]  # compute pruning may drop own channels
        self.own_index = None if len(kept) == len(own) else _index([i for i, c in enumerate(own) if c in position])
        # the weight is stored once, cut into the blocks the forward multiplies
        w_own = weight[:, _index([position[c] for c in kept])]
        # a node using none of its inputs (tiny layers, skewed ratios, all dropped)
        # multiplies one zero channel, so its output still has the right shape and the bias
        self.no_input = not kept
        if self.no_input:
            w_own = weight.new_zeros((weight.shape[0], 1, *weight.shape[2:]))
        self.w_own = nn.Parameter(w_own.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.recv_from: list[tuple[int, int]] = []  # (peer j, |S_kj|)
        self.w_peer = nn.ParameterList()
        for j in range(split.nodes):
            if j != k and split.selected[k][j]:
                cols = _index([position[c] for c in split.selected[k][j]])
                self.recv_from.append((j, len(split.selected[k][j])))
                self.w_peer.append(nn.Parameter(weight[:, cols].contiguous(), requires_grad=False))
        local = {c: i for i, c in enumerate(own)}
        self.send_to = [  # (peer p, positions of S_pk among this node's channels)
            (p, _index([local[c] for c in split.selected[p][k]]))
            for p in range(split.nodes) if p != k and split.selected[p][k]
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, dim, tag = self.transport, self.dim % x.dim(), self.tag
        self._next_call()
        recvs = []
        for j, count in self.recv_from:
            shape = list(x.shape)
            shape[dim] = count
            recvs.append(t.irecv(shape, x.dtype, j, tag))
        sends = [t.isend(x.index_select(dim, idx), p, tag) for p, idx in self.send_to]
        if self.no_input:
            own = x.new_zeros(x.shape[:dim] + (1,) + x.shape[dim + 1:])
        else:
            own = x if self.own_index is None else x.index_select(dim, self.own_index)
        y = self.fn(own, self.w_own, self.bias)  # overlaps with the transfers
        for weight, handle in zip(self.w_peer, recvs):
            y = y + self.fn(handle.wait(), weight, None)
        for handle in sends:
            handle.wait()
        return y


class DiscoReduceLayer(_Calls, nn.Module):
    """The head (a classifier, or a segmentation/SR model's last conv): partial products
    summed on ``root`` (others return theirs)."""

    def __init__(self, split: LayerSplit, k: int, transport: Transport, like: nn.Module,
                 weight: torch.Tensor, bias: torch.Tensor | None, tag: str | Sequence[str] | None = None) -> None:
        super().__init__()
        self.name, self.k, self.root, self.transport = split.name, k, split.root, transport
        self._init_calls(split, tag)
        self.fn, self.dim = _layer_fn(like)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.senders = [j for j in range(split.nodes) if j != split.root and split.in_groups[j]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tag = self.tag
        self._next_call()
        partial = self.fn(x, self.weight, None)
        if self.k != self.root:
            if self.k in self.senders:
                self.transport.send(partial, self.root, tag)
            return partial
        handles = [self.transport.irecv(partial.shape, partial.dtype, j, tag) for j in self.senders]
        for handle in handles:
            partial = partial + handle.wait()
        if self.bias is None:
            return partial
        # a conv head's bias is per channel (dim 1) of a spatial map, a linear's the last dim
        return partial + (self.bias.view(-1, *[1] * (partial.dim() - 2)) if self.dim == 1 else self.bias)


class DiscoLayerNorm(nn.Module):
    """A LayerNorm over channels split across nodes: each node sends every other holder
    its per-token partial sum and sum of squares (2 numbers per token), then normalises
    its own channels with the global statistics."""

    def __init__(self, name: str, groups: list[list[int]], k: int, transport: Transport, like: nn.LayerNorm,
                 weight: torch.Tensor | None, bias: torch.Tensor | None, tag: str | None = None) -> None:
        super().__init__()
        self.name, self.k, self.transport, self.eps = name, k, transport, like.eps
        self.tag = tag or name
        self.channels = sum(len(g) for g in groups)
        self.peers = [j for j, g in enumerate(groups) if g and j != k] if groups[k] else []
        self.weight = nn.Parameter(weight, requires_grad=False) if weight is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.transport
        stats = torch.stack([x.sum(-1), x.pow(2).sum(-1)], dim=-1)
        recvs = [t.irecv(stats.shape, stats.dtype, j, self.tag) for j in self.peers]
        sends = [t.isend(stats, j, self.tag) for j in self.peers]
        total = stats
        for handle in recvs:
            total = total + handle.wait()
        for handle in sends:
            handle.wait()
        mean = total[..., 0:1] / self.channels
        var = (total[..., 1:2] / self.channels - mean * mean).clamp_min(0)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y + self.bias if self.bias is not None else y


def _localise_attention(model: nn.Module, k: int) -> None:
    """Attention modules whose qkv is split: this node runs only its own heads."""
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, DiscoSplitLayer) and hasattr(module, "num_heads"):
            heads = module.num_heads * qkv.out_local // qkv.out_channels
            if hasattr(module, "attn_dim"):
                module.attn_dim = module.attn_dim * heads // module.num_heads
            module.num_heads = heads


def _localise_grouped(conv: nn.Module, split: GroupedSplit, k: int) -> None:
    """A grouped conv on node k: the same module over its own whole groups (the shard holds
    their weight rows), so it needs no exchange."""
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros":
        raise DiscoZooError(f"{split.name}: the partition's grouped layer is a {type(conv).__name__} "
                            "(expected an nn.Conv2d with zero padding)")
    conv.groups = split.local_groups(k)
    conv.in_channels, conv.out_channels = len(split.in_groups[k]), len(split.out_groups[k])


def _localise_group_norms(model: nn.Module) -> None:
    """A GroupNorm whose channels are split (the partition keeps its groups whole on each
    node) normalises this node's groups only: as many as its sliced weight holds."""
    for module in model.modules():
        if isinstance(module, nn.GroupNorm) and module.affine and module.weight.shape[0] != module.num_channels:
            per_group = module.num_channels // module.num_groups
            module.num_channels = module.weight.shape[0]
            module.num_groups = module.num_channels // per_group


def _init_non_persistent_buffers(model: nn.Module) -> None:
    """Buffers that are not in any state dict (e.g. Swin's relative position index) are
    computed by the module itself (timm's meta-device hook); they are tiny."""
    for module in model.modules():
        if any(b.is_meta for b in module.buffers(recurse=False)) and hasattr(module, "init_non_persistent_buffers"):
            for leaf, buf in module._buffers.items():
                if buf is not None and buf.is_meta:
                    module._buffers[leaf] = torch.empty_like(buf, device="cpu")
            module.init_non_persistent_buffers()


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Put a shard tensor in place of the meta parameter/buffer of the same name."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    elif leaf in module._buffers:
        module._buffers[leaf] = tensor
    else:
        raise DiscoZooError(f"shard tensor {name!r} has no place in the model")


def _warm_imports(folder: str) -> None:
    """Build the architecture on the meta device first, so the RSS measured around
    loading counts this rank's weights rather than the first import of the model code."""
    config = load_folder_config(folder)
    with torch.device("meta"):
        build_model(config.arch, **config.args)


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc), to measure what loading a shard adds."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * resource.getpagesize()


def build_node_model(folder: Path | str, transport: Transport, verify: bool = True) -> tuple[nn.Module, Partition]:
    """Rank ``transport.rank``'s part of the DISCO model in ``folder`` (eval mode)."""
    k = transport.rank
    nodes = load_folder_config(folder).nodes  # before reading a shard: rank k of too many has none
    if nodes != transport.world_size:
        raise DiscoZooError(f"{folder} is split over {nodes} nodes; run it with {nodes} ranks, not {transport.world_size}")
    part, config, shard = read_node_shard(folder, k, verify)
    with torch.device("meta"):
        model = build_model(config.arch, **config.args)
    tags = disco_tags(part)
    for name, split in part.layers.items():
        like = model.get_submodule(name)
        weight, bias = shard.pop(f"{name}.weight"), shard.pop(f"{name}.bias", None)
        cls = DiscoReduceLayer if split.mode == "reduce" else DiscoSplitLayer
        model.set_submodule(name, cls(split, k, transport, like, weight, bias, [tags[c] for c in split.call_keys()]))
    for name, split in part.norms.items():
        like = model.get_submodule(name)
        weight, bias = shard.pop(f"{name}.weight", None), shard.pop(f"{name}.bias", None)
        model.set_submodule(name, DiscoLayerNorm(name, split.groups, k, transport, like, weight, bias, tags[name]))
    for name, split in part.grouped.items():
        _localise_grouped(model.get_submodule(name), split, k)
    _localise_attention(model, k)
    _init_non_persistent_buffers(model)
    for name, tensor in shard.items():
        _assign(model, name, tensor)
    _localise_group_norms(model)
    missing = [n for n, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    if missing:
        raise DiscoZooError(f"node {k}'s shard lacks {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return model.eval(), part


def disco_tags(part: Partition) -> dict[str, str]:
    """The session's tag policy over a DISCO run's messages: the image scatter, then every
    exchanging layer's calls and norm in partition order, then the output gathers. A tag is
    the call's key (the layer's name; ``name@i`` for the later calls of a shared layer:
    what the accounting and the byte counters key by) unless its backend id is taken."""
    gathers = {output_tag(o.key): output_tag(o.key) for o in part.outputs}
    calls = {key: key for layer in part.layers.values() for key in layer.call_keys()}
    return unique_tags({INPUT_TAG: INPUT_TAG, **calls, **{n: n for n in part.norms}, **gathers})


def _gather(t: Transport, gather: OutputGather, local: torch.Tensor, tag: str) -> torch.Tensor:
    """Root assembles one output from every node's channels (in channel order); the others send theirs."""
    if t.rank != gather.root:
        if gather.groups[t.rank]:
            t.send(local.contiguous(), gather.root, tag)
        return local
    channels = sum(len(g) for g in gather.groups)
    full = local.new_empty((local.shape[0], channels, *local.shape[2:]))
    full[:, _index(gather.groups[t.rank])] = local
    handles = []
    for j, group in enumerate(gather.groups):
        if j != t.rank and group:
            shape = [local.shape[0], len(group), *local.shape[2:]]
            handles.append((group, t.irecv(shape, local.dtype, j, tag)))
    for group, handle in handles:
        full[:, _index(group)] = handle.wait()
    return full


def gather_outputs(t: Transport, part: Partition, out: Any, tags: dict[str, str]) -> Any:
    """The model output with every split output gathered on the root (structure kept)."""
    if not part.outputs:
        return out
    gathers = {o.key: o for o in part.outputs}
    leaves, spec = tree_flatten_with_path(out)
    done = []
    for path, leaf in leaves:
        gather = gathers.pop(output_key(path), None)
        if gather is not None:
            tag = output_tag(gather.key)
            leaf = _gather(t, gather, leaf, tags.get(tag, tag))
        done.append(leaf)
    if gathers:
        raise DiscoZooError(f"the model's output has no {', '.join(map(repr, gathers))}, which the partition gathers")
    return tree_unflatten(done, spec)


def scatter_input(t: Transport, x: torch.Tensor | None, first: LayerSplit, input_shape: list[int]) -> torch.Tensor:
    """Rank 0 sends node k its channels I_k of the image (tag 'input'); returns ours."""
    dim = 1 if first.kind == "conv" else len(input_shape) - 1
    if t.rank == 0:
        handles = [t.isend(x.index_select(dim, _index(first.in_groups[k])), k, INPUT_TAG)
                   for k in range(1, t.world_size) if first.in_groups[k]]
        for handle in handles:
            handle.wait()
        return x.index_select(dim, _index(first.in_groups[0]))
    shape = list(input_shape)
    shape[dim] = len(first.in_groups[t.rank])
    return t.recv(shape, torch.float32, 0, INPUT_TAG) if first.in_groups[t.rank] else torch.empty(shape)


def node_folder(source: str, rank: int) -> Path:
    """The folder rank ``rank`` loads from: ``source`` itself when it is a model folder,
    else the published name's folder resolved for this node only, so that a device
    downloading from the Hub fetches config.json, the card and its own shard, never
    the other nodes' weights (:func:`disco_zoo.hub.resolve_folder`)."""
    from disco_zoo.store import CONFIG_NAME

    if (Path(source) / CONFIG_NAME).is_file():
        return Path(source)
    from disco_zoo.hub import resolve_folder

    return resolve_folder(source, node=rank)


def load_node(t: Transport, folder: str, verify: bool = True) -> tuple[nn.Module, Partition, dict[str, Any]]:
    """Rank ``t.rank``'s node model, with what loading its shard cost (time, RSS growth).

    ``folder`` is a model folder or a published name (see :func:`node_folder`)."""
    folder = str(node_folder(folder, t.rank))
    _warm_imports(folder)
    rss_before = current_rss_bytes()
    t0 = time.perf_counter()
    model, part = build_node_model(folder, t, verify)
    stats = {
        "load_s": time.perf_counter() - t0,
        "rss_load_growth_bytes": current_rss_bytes() - rss_before,
        "params": sum(p.numel() for p in model.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in [*model.parameters(), *model.buffers()]),
    }
    return model, part, stats


def inference_fn(t: Transport, model: nn.Module, part: Partition, input_shape: list[int],
                 x: torch.Tensor | None, at_size: bool = True) -> Callable[[], torch.Tensor]:
    """One inference of this rank's part, input scatter included (``x`` on rank 0 only).

    A model with pre/post-processing stages (:mod:`disco_zoo.graph.stages`: a detector's
    transform, its box decoding and NMS) runs them on rank 0 around its split core, every
    rank's model configured to run at ``input_shape`` (:func:`~disco_zoo.graph.stages.set_input_shape`,
    kept: a node model serves its run): rank 0
    pre-processes the image and scatters the core's input; every rank runs the core; rank 0
    post-processes the gathered outputs, so its output is the model's own (detections).
    ``at_size=False`` (the service: an application's call must return what the model
    itself returns) leaves the pre-processing as the model was built, so an image of
    another size is resized as the model would resize it."""
    first = next(iter(part.layers.values()))
    tags = disco_tags(part)
    core = core_of(model)
    if at_size:  # the run is at input_shape (a detector built for another size would resize to it)
        set_input_shape(model, input_shape)
    core_shape = list(core_input_shape(model, input_shape, at_size))  # every rank knows what it receives
    staged = has_stages(model)
    if staged and output_rank(part) != 0:
        raise DiscoZooError(f"{type(model).__name__} pre- and post-processes on rank 0, which holds the image, but "
                            f"its outputs end on rank {output_rank(part)}; reduce its heads on rank 0")

    reset = reset_calls(model)

    def forward() -> Any:
        reset()  # a shared layer's first call takes its first tag, even after a failed run
        core_in, context = before_core(model, x) if t.rank == 0 else (None, None)
        out = gather_outputs(t, part, core(scatter_input(t, core_in, first, core_shape)), tags)
        return after_core(model, out, context) if staged and t.rank == 0 else out

    return forward


def output_rank(part: Partition) -> int:
    """The rank that ends up with the output: the classifier's reduce root (else rank 0)."""
    return next((l.root for l in part.layers.values() if l.mode == "reduce"), 0)


def run_disco(
    t: Transport,
    folder: str,
    input_shape: list[int],
    input_path: str | None = None,
    seed: int = 0,
    warmup: int = 0,
    repeats: int = 1,
    verify: bool = True,
) -> dict[str, Any]:
    """Launch entry: one (or ``repeats`` timed) distributed inference(s).

    Returns, per rank: timings (load, per inference), bytes sent (counted on the last
    inference only, so they are one inference's traffic), peak RSS, the output rank, and
    on that rank the output as nested lists (:func:`disco_zoo.runtime.session.rank_report`).
    """
    model, part, stats = load_node(t, folder, verify)
    x = load_input(input_path, input_shape, seed) if t.rank == 0 else None
    forward = inference_fn(t, model, part, input_shape, x)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t.barrier()
            t.counter.reset()  # count one inference
            start = time.perf_counter()
            out = forward()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    t.barrier()
    return rank_report(t, output_rank(part), out, **stats, times_s=times,
                       maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
