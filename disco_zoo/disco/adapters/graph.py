"""The generic adapter: a DISCO partition for any traceable convolutional DAG.

Why one adapter: every family-specific adapter repeated the same reasoning (which
tensors must share a channel-to-node map so residual adds stay local, which layer is
the head). Here that reasoning runs on the torch.fx graph
(:func:`disco_zoo.graph.layer_graph._symbolic_trace`, timm's leaves kept), so a new
convolutional architecture needs no new code.

Every tensor value belongs to a *class* (union-find); tensors of one class share one
channel-to-node map. The rules, per op (``ops_mapped`` lists them):

* conv (groups=1) / linear: its output is a new class; the layer is ``split``
  (in_groups = input map, out_groups = output map) or, when its output reaches a model
  output only through parameter-free ops, ``reduce`` (partial products summed on root;
  the output then lives on root only).
* grouped / depthwise conv: each conv group stays whole on one node (the input class's
  unit becomes channels-per-group); with in == out channels the output shares the input's
  class, else its map is derived per group. It sends nothing.
* BatchNorm, activations, pooling, dropout, identity, interpolate/upsample, flatten of
  (B, C, 1, 1), scalar add/mul: keep the map (BatchNorm's tensors are sliced by it).
* GroupNorm: keeps the map with each of its groups whole on one node (its unit becomes
  channels-per-group), so it is local; its weight and bias are sliced by the map.
* a per-channel constant (a state-dict buffer/parameter read in forward, e.g. a mean
  shift or a layer scale) added to / multiplied with a split tensor is sliced by its map.
* add/sub/mul/div of tensors (residual add, squeeze-excitation scale): union the classes.
* concat on channels: the output map is the inputs' maps side by side.
* pixel_shuffle(r): input unit r^2, output channel c on the node of input c*r^2;
  pixel_unshuffle the inverse.
* a free class's map is contiguous groups by the ratios, in units of its unit, so
  ResNet's maps are exactly ``contiguous_groups(C, nodes, ratios)``.
* every model output whose map is split is gathered on the root (``Partition.outputs``).
* a conv/linear called more than once (a head shared across FPN levels) keeps one split:
  every call's input joins one class (they must share a map; a clash names the layer and
  its calls), every call's output is the first call's class, and all calls are split or
  all reduce. ``LayerSplit.calls`` counts them; each call exchanges its own messages.
* after a reduce head, on the root's whole tensor: view/reshape/permute/transpose/
  (un)squeeze and cat/stack of root tensors (a detector's per-level outputs).

Anything else touching a split tensor (reshape/view/permute of channels, per-channel
values that are not state-dict tensors, one constant on two different maps, ops with no rule) is a :class:`DiscoZooError` naming the op, the fx node and
what would make it work. It never guesses.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten_with_path

from disco_zoo.disco.partition import (
    GroupedSplit, OutputGather, Partition, TensorSplit, contiguous_groups, output_key,
)
from disco_zoo.errors import DiscoZooError

__all__ = ["graph_partition", "ops_mapped"]

_KEEP_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
    nn.Identity, nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d, nn.Flatten,
)
_KEEP_FUNCTIONS: set[Any] = {
    F.relu, F.relu6, torch.relu, F.hardswish, F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh,
    F.gelu, F.silu, F.leaky_relu, F.interpolate, F.upsample, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.avg_pool2d, F.max_pool2d, F.dropout, torch.flatten, torch.clone,
}
_KEEP_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clone", "contiguous", "flatten", "mean",
                 "amax", "hardswish", "float", "to"}
_REDUCING_METHODS = {"mean", "amax"}
_BINARY_FUNCTIONS: set[Any] = {operator.add, operator.iadd, torch.add, operator.sub, operator.isub, torch.sub,
                               operator.mul, operator.imul, torch.mul, operator.truediv, torch.div}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_CONCAT_FUNCTIONS: set[Any] = {torch.cat, torch.concat}
# shape ops that move channels: never on split tensors, but free on the root's whole
# tensor after a reduce head (a detector flattens its per-level head maps and joins them);
# flatten and contiguous already keep the map (and so stay on the root) by the rules above
_ROOT_SHAPE_METHODS = {"view", "reshape", "permute", "transpose", "unsqueeze", "squeeze"}
_ROOT_SHAPE_FUNCTIONS: set[Any] = {torch.reshape, torch.permute, torch.transpose, torch.unsqueeze, torch.squeeze,
                                   torch.stack, *_CONCAT_FUNCTIONS}
_SHUFFLE_FUNCTIONS: dict[Any, str] = {F.pixel_shuffle: "shuffle", torch.pixel_shuffle: "shuffle",
                                      F.pixel_unshuffle: "unshuffle", torch.pixel_unshuffle: "unshuffle"}


def _reads_shape(node: torch.fx.Node) -> bool:
    """``x.shape`` / ``x.size()`` / ``x.dim()``: metadata, the same on every node."""
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in ("shape", "ndim")
    return node.op == "call_method" and node.target in ("size", "dim")


def ops_mapped() -> dict[str, list[str]]:
    """The ops the adapter has a rule for (anything else on a split tensor is an error)."""
    name = lambda f: getattr(f, "__name__", str(f))  # noqa: E731
    return {
        "layers": ["nn.Conv2d (groups=1: split/reduce; groups>1: grouped)", "nn.Linear (split/reduce)"],
        "keep map (modules)": sorted({m.__name__ for m in _KEEP_MODULES} | {"BatchNorm1d", "BatchNorm2d", "GroupNorm"}),
        "keep map (functions)": sorted({name(f) for f in _KEEP_FUNCTIONS}),
        "keep map (methods)": sorted(_KEEP_METHODS),
        "union (elementwise)": sorted({name(f) for f in _BINARY_FUNCTIONS} | _BINARY_METHODS),
        "compose": ["cat/concat on channels", "pixel_shuffle / nn.PixelShuffle", "pixel_unshuffle / nn.PixelUnshuffle"],
        "root only (after a reduce head)": sorted({name(f) for f in _ROOT_SHAPE_FUNCTIONS} | _ROOT_SHAPE_METHODS),
    }


# -- classes: union-find over tensor values -----------------------------------------------


@dataclass
class _Class:
    width: int
    origin: str  # the fx node that created it (for messages)
    unit: int = 1  # the map assigns whole blocks of ``unit`` channels to one node
    derived: list[tuple[str, Callable[[], list[int]]]] = field(default_factory=list)  # (why, node per channel)
    shared_by: list[str] = field(default_factory=list)  # why tensors that are not added together share the map


class _Classes:
    """Union-find over channel classes; each resolves to a node-per-channel list."""

    def __init__(self, nodes: int, ratios: list[float]) -> None:
        self.nodes, self.ratios = nodes, ratios
        self.items: list[_Class] = []
        self.parent: list[int] = []
        self._maps: dict[int, list[int]] = {}
        self._resolving: set[int] = set()

    def new(self, width: int, origin: str) -> int:
        self.items.append(_Class(width, origin))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, c: int) -> int:
        while self.parent[c] != c:
            self.parent[c] = self.parent[self.parent[c]]
            c = self.parent[c]
        return c

    def get(self, c: int) -> _Class:
        return self.items[self.find(c)]

    def set_unit(self, c: int, unit: int, why: str) -> None:
        item = self.get(c)
        if item.width % unit:
            raise DiscoZooError(f"{why}: {item.width} channels are not whole blocks of {unit}")
        item.unit = math.lcm(item.unit, unit)

    def union(self, a: int, b: int, why: str) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        ia, ib = self.items[ra], self.items[rb]
        if ia.width != ib.width:
            raise DiscoZooError(f"{why}: joins tensors of {ia.width} and {ib.width} channels; DISCO can only join "
                                "tensors with the same channels (no broadcasting over channels)")
        self.parent[rb] = ra
        ia.unit = math.lcm(ia.unit, ib.unit)
        ia.derived += ib.derived
        ia.shared_by += ib.shared_by
        ia.origin = ia.origin or ib.origin
        return ra

    def node_map(self, c: int) -> list[int]:
        """Node of every channel of class ``c`` (resolved once, then cached)."""
        r = self.find(c)
        if r in self._maps:
            return self._maps[r]
        if r in self._resolving:
            raise DiscoZooError(f"{self.items[r].origin}: its channel map depends on itself; DISCO cannot split it")
        self._resolving.add(r)
        item = self.items[r]
        if item.derived:
            maps = [(why, make()) for why, make in item.derived]
            why0, found = maps[0]
            for why, other in maps[1:]:
                if other != found:
                    shared = f" ({'; '.join(item.shared_by)})" if item.shared_by else ""
                    raise DiscoZooError(f"{why} and {why0} fix different channel maps on tensors that must share one "
                                        f"(e.g. a residual add){shared}; DISCO cannot split this graph")
            for start in range(0, item.width, item.unit):
                if len(set(found[start:start + item.unit])) > 1:
                    raise DiscoZooError(f"{why0}: its channel map splits a block of {item.unit} channels that a "
                                        "grouped conv or pixel_shuffle needs whole on one node")
        else:
            found = []
            for k, units in enumerate(contiguous_groups(item.width // item.unit, self.nodes, self.ratios)):
                found += [k] * (len(units) * item.unit)
        self._resolving.discard(r)
        self._maps[r] = found
        return found

    def groups(self, c: int) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.nodes)]
        for channel, k in enumerate(self.node_map(c)):
            out[k].append(channel)
        return out


@dataclass
class _LayerUse:
    """A conv/linear the walk met: its classes, its mode and the fx nodes that call it."""

    name: str
    kind: str  # "conv" | "linear"
    src: int  # input class (every call's)
    dst: int  # output class (every call's)
    mode: str  # "split" | "reduce"
    nodes: list[str]  # fx node of each call, in forward order


# -- tracing --------------------------------------------------------------------------------

_ROOT = "root"  # a tensor that lives on the root only (after a reduce layer)


@dataclass(frozen=True)
class _Const:
    """A tensor from get_attr (a buffer/parameter used directly in forward)."""

    name: str
    shape: tuple[int, ...]


def _probe_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """Inputs to trace with: a small image for the first conv (the partition does not
    depend on the spatial size), else the first linear's features; then the model's own size."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if first is None:
        raise DiscoZooError(f"{type(model).__name__} has no conv or linear layer to split")
    if isinstance(first, nn.Linear):
        return [(1, first.in_features)]
    shapes = [(1, first.in_channels, 64, 64)]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else getattr(cfg, "input_size", None)
    if size and len(size) == 3:
        shapes.append((1, *size))
    return shapes


def _record(model: nn.Module, gm: torch.fx.GraphModule) -> dict[str, Any]:
    """Run the traced graph once; every node's value as shape (tensor) or structure."""
    values: dict[str, Any] = {}

    def meta(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (tuple, list)):
            return type(value)(meta(v) for v in value)
        if isinstance(value, dict):
            return {k: meta(v) for k, v in value.items()}
        return value if isinstance(value, (int, float, bool, str, type(None), torch.Size)) else object()

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            values[n.name] = meta(result)
            return result

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    errors = []
    was_training = model.training
    model.eval()
    try:
        for shape in _probe_shapes(model):
            try:
                with torch.no_grad():
                    _Recorder(gm).run(torch.zeros(shape, device=device))
                return values
            except Exception as err:  # noqa: BLE001 - any failure: try the next size, then report
                values.clear()
                errors.append(f"{list(shape)}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    finally:
        model.train(was_training)
    raise DiscoZooError(f"{type(model).__name__} does not run on a probe input ({'; '.join(errors)}); "
                        "give it a pretrained_cfg input_size it accepts")


def _is_tensor_meta(value: Any) -> bool:
    """A recorded tensor (its shape as a plain tuple; ``torch.Size`` values are metadata)."""
    return type(value) is tuple and all(isinstance(v, int) for v in value)


def _holds_tensor(value: Any) -> bool:
    if _is_tensor_meta(value):
        return True
    if isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
        return any(_holds_tensor(v) for v in value)
    return isinstance(value, dict) and any(_holds_tensor(v) for v in value.values())


def _spatial_only(node: torch.fx.Node, ndim: int) -> bool:
    """A mean/max whose ``dim`` lists spatial dims only (keeps batch and channels)."""
    dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
    if dims is None:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    return all(isinstance(d, int) and d % ndim >= 2 for d in dims)


# -- the propagation ------------------------------------------------------------------------


class _Propagation:
    """One forward walk over the fx graph, assigning every tensor a class (or root)."""

    def __init__(self, model: nn.Module, gm: torch.fx.GraphModule, family: str, nodes: int, ratios: list[float]) -> None:
        self.model, self.gm = model, gm
        self.values = _record(model, gm)
        self.classes = _Classes(nodes, ratios)
        self.part = Partition(family, nodes, ratios)
        self.state: dict[str, Any] = {}  # fx node name -> class id | _ROOT | _Const | None
        self.layers: list[_LayerUse] = []  # in the order of their first calls
        self.grouped: list[tuple[str, int, int, int]] = []  # (name, groups, in class, out class)
        self.tensors: dict[str, tuple[int, int, list[str]]] = {}  # tensor name -> (dim, class, fx nodes using it)
        self.outputs: list[tuple[str, int]] = []  # (key, class)
        self.image: int | None = None
        self.state_names = set(model.state_dict())
        self.const_uses: list[tuple[str, int, int, str]] = []  # (tensor name, dim, class, where) per use
        self.root_consts: set[str] = set()  # constants also used on root's whole tensor
        self.reduce = self._heads()

    # -- helpers ----------------------------------------------------------------------
    def _where(self, node: torch.fx.Node) -> str:
        if node.op == "call_module":
            return f"layer {node.target!r} ({type(self.gm.get_submodule(str(node.target))).__name__}, fx node {node.name})"
        return f"{getattr(node.target, '__name__', node.target)} (fx node {node.name})"

    def _shape(self, node: torch.fx.Node) -> tuple[int, ...] | None:
        value = self.values.get(node.name)
        return value if _is_tensor_meta(value) else None

    def _tensor_inputs(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        found: list[torch.fx.Node] = []
        torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
        return [n for n in found if self._shape(n) is not None]

    def _channels(self, node: torch.fx.Node) -> int:
        shape = self._shape(node)
        if shape is None or len(shape) < 2:
            raise DiscoZooError(f"{self._where(node)}: expected a (batch, channels, ...) tensor, got shape {shape}")
        return shape[1]

    def _unmapped(self, node: torch.fx.Node, what: str = "has no DISCO rule") -> DiscoZooError:
        return DiscoZooError(
            f"{self._where(node)} {what} for split channels; DISCO maps conv/linear, BatchNorm, GroupNorm, activations, pooling, "
            "dropout, identity, interpolate, flatten of (B, C, 1, 1), elementwise add/mul, channel concat and "
            "pixel_shuffle. Rewrite the op with these (a reshape of channels, for one, can often be a conv)"
        )

    def _split_state(self, node: torch.fx.Node, source: torch.fx.Node) -> Any:
        """The state of ``node`` when it keeps ``source``'s map (channels must not change)."""
        state = self.state.get(source.name)
        if isinstance(state, int) and self._channels(node) != self._channels(source):
            raise self._unmapped(node, f"changes {self._channels(source)} channels into {self._channels(node)}")
        return state

    def _slice(self, node: torch.fx.Node, tensor: str, state: int) -> int:
        """Slice a module's per-channel tensor by ``state``'s map. A module called again (a
        norm in a head shared across pyramid levels) has one slice for every call, so the
        tensors it is called on share one map; returns ``state``'s class."""
        if tensor not in self.tensors:
            self.tensors[tensor] = (0, state, [node.name])
            return state
        dim, first, nodes = self.tensors[tensor]
        nodes.append(node.name)
        if self.classes.find(first) != self.classes.find(state):
            calls = f"{tensor!r} is used by fx nodes {', '.join(nodes)}, so all their tensors share one map"
            self.classes.get(first).shared_by.append(calls)
            self.classes.union(first, state, f"{self._where(node)} ({calls})")
        return self.classes.find(state)

    # -- the head rule ------------------------------------------------------------------
    def _passable(self, node: torch.fx.Node) -> bool:
        """Parameter-free ops that may run on root's full tensor after a reduce layer."""
        if node.op == "call_module":
            module = self.gm.get_submodule(str(node.target))
            return isinstance(module, (*_KEEP_MODULES, nn.PixelShuffle, nn.PixelUnshuffle))
        if node.op == "call_function":
            return (node.target in _KEEP_FUNCTIONS or node.target in _BINARY_FUNCTIONS or node.target in _SHUFFLE_FUNCTIONS
                    or node.target in _ROOT_SHAPE_FUNCTIONS)
        if node.op == "call_method":
            return node.target in _KEEP_METHODS or node.target in _BINARY_METHODS or node.target in _ROOT_SHAPE_METHODS
        return False

    def _is_layer(self, node: torch.fx.Node) -> bool:
        if node.op != "call_module":
            return False
        module = self.gm.get_submodule(str(node.target))
        return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)

    def _heads(self) -> set[str]:
        """conv/linear nodes whose outputs reach model outputs only through parameter-free
        ops (and joins of such heads): the ``reduce`` layers."""
        nodes = list(self.gm.graph.nodes)
        rootable: set[str] = set()
        for node in nodes:
            inputs = self._tensor_inputs(node)
            if node.op == "get_attr" or self._is_layer(node) or (  # constants are whole on root
                    self._passable(node) and inputs and all(n.name in rootable for n in inputs)):
                rootable.add(node.name)
        sink: set[str] = set()
        for node in reversed(nodes):
            if self._shape(node) is None or not node.users:
                continue
            if all(u.op == "output" or _reads_shape(u) or (u.name in sink and self._passable(u)) for u in node.users):
                if node.name in rootable:
                    sink.add(node.name)
        return {n.name for n in nodes if n.name in sink and self._is_layer(n)}

    # -- the walk -------------------------------------------------------------------------
    def run(self) -> Partition:
        for node in self.gm.graph.nodes:
            self.state[node.name] = self._visit(node)
        return self._build()

    def _visit(self, node: torch.fx.Node) -> Any:
        if node.op == "placeholder":
            if self.image is not None:
                raise DiscoZooError(f"{type(self.model).__name__} takes several inputs; DISCO splits one image")
            self.image = self.classes.new(self._channels(node), node.name)
            return self.image
        if node.op == "get_attr":
            shape = self._shape(node)
            return _Const(str(node.target), shape) if shape is not None else None
        if node.op == "output":
            self._outputs(node)
            return None
        inputs = self._tensor_inputs(node)
        states = [self.state.get(n.name) for n in inputs]
        split = any(isinstance(s, int) or s == _ROOT for s in states)
        if self._shape(node) is None:  # metadata (x.shape, x.size()) or a structure
            if split and _holds_tensor(self.values.get(node.name)):
                raise self._unmapped(node, "returns several tensors")
            return None
        if not split:
            return None  # computed from constants alone: replicated like any other state
        if node.op == "call_module":
            return self._module(node, inputs[0], states)
        return self._function(node, inputs, states)

    def _module(self, node: torch.fx.Node, source: torch.fx.Node, states: list[Any]) -> Any:
        module = self.gm.get_submodule(str(node.target))
        name = str(node.target)
        if len(states) != 1:
            raise self._unmapped(node, "takes several tensors")
        state = states[0]
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return self._layer(node, name, module, state)
        if state == _ROOT:
            return _ROOT  # runs on root's full tensor; its state stays whole (replicated)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            state = self._split_state(node, source)
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                if getattr(module, leaf, None) is not None:
                    state = self._slice(node, f"{name}.{leaf}", state)
            return state
        if isinstance(module, nn.GroupNorm):
            return self._group_norm(node, name, module, source)
        if isinstance(module, _KEEP_MODULES):
            return self._split_state(node, source)
        if isinstance(module, (nn.PixelShuffle, nn.PixelUnshuffle)):
            factor = module.upscale_factor if isinstance(module, nn.PixelShuffle) else module.downscale_factor
            return self._shuffle(node, state, factor, isinstance(module, nn.PixelShuffle))
        raise self._unmapped(node)

    def _layer(self, node: torch.fx.Node, name: str, module: nn.Module, state: Any) -> Any:
        kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        if state == _ROOT:
            raise DiscoZooError(f"{self._where(node)} reads a tensor that lives on the root only (after the head "
                                f"{sorted(self.reduce)}); DISCO cannot split a layer after the head")
        if not isinstance(state, int):
            raise self._unmapped(node, "reads a tensor that is not split by channels")
        if type(module) not in (nn.Conv2d, nn.Linear) and type(module).__name__ not in ("MaskedConv2d", "MaskedLinear"):
            raise DiscoZooError(f"{self._where(node)}: {type(module).__name__} is a subclass with its own forward; "
                                "DISCO splits plain nn.Conv2d / nn.Linear only")
        if kind == "linear" and len(self._shape(node.args[0])) != 2:
            raise DiscoZooError(f"{self._where(node)} reads a {len(self._shape(node.args[0]))}-d tensor; the graph "
                                "adapter splits linears over (batch, features) only (pool and flatten first)")
        if kind == "conv" and module.padding_mode != "zeros":
            raise DiscoZooError(f"{self._where(node)}: padding_mode={module.padding_mode!r}; DISCO needs 'zeros'")
        out_channels = self._channels(node)
        if kind == "conv" and module.groups > 1:
            return self._grouped(node, name, module, state)
        mode = "reduce" if node.name in self.reduce else "split"
        use = next((u for u in self.layers if u.name == name), None)
        if use is not None:
            return self._call_again(node, use, state, mode)
        out = self.classes.new(out_channels, node.name)
        self.layers.append(_LayerUse(name, kind, state, out, mode, [node.name]))
        return _ROOT if mode == "reduce" else out

    def _call_again(self, node: torch.fx.Node, use: "_LayerUse", state: int, mode: str) -> Any:
        """A later call of a layer (a head shared across pyramid levels): one split serves
        every call, so its input shares the first call's map and its output is the same class."""
        calls = f"layer {use.name!r} is called on fx nodes {', '.join([*use.nodes, node.name])}"
        if mode != use.mode:
            raise DiscoZooError(f"{calls}; its call {node.name} is a {mode} layer but {use.nodes[0]} a {use.mode} one. "
                                "One split serves every call: make every call feed the model outputs alike (all "
                                "through parameter-free ops for a head, or none)")
        use.nodes.append(node.name)
        if self.classes.find(state) != self.classes.find(use.src):
            self.classes.get(use.src).shared_by.append(f"{calls}, so all its inputs share one map")
            self.classes.union(use.src, state, f"{self._where(node)} ({calls})")
            use.src = self.classes.find(use.src)
        return _ROOT if mode == "reduce" else use.dst

    def _grouped(self, node: torch.fx.Node, name: str, module: nn.Conv2d, state: int) -> int:
        first = next((g for g in self.grouped if g[0] == name), None)
        if first is not None:  # called again (shared across levels): one split, one map for every call
            self._slice(node, f"{name}.weight", first[3])
            calls = f"grouped layer {name!r} is called on fx nodes {', '.join(self.tensors[f'{name}.weight'][2])}"
            if self.classes.find(first[2]) != self.classes.find(state):
                self.classes.get(first[2]).shared_by.append(f"{calls}, so all its inputs share one map")
                self.classes.union(first[2], state, f"{self._where(node)} ({calls})")
            return first[3]
        groups = module.groups
        per_in, per_out = module.in_channels // groups, module.out_channels // groups
        self.classes.set_unit(state, per_in, f"{self._where(node)} (groups={groups})")
        if per_in == per_out:
            out = state  # each output channel stays with its input channels: one class
        else:
            out = self.classes.new(module.out_channels, node.name)
            source = state
            self.classes.get(out).derived.append((
                self._where(node),
                lambda: [self.classes.node_map(source)[(o // per_out) * per_in] for o in range(module.out_channels)],
            ))
        self.grouped.append((name, groups, state, out))
        self._slice(node, f"{name}.weight", out)
        if module.bias is not None:
            self._slice(node, f"{name}.bias", out)
        return out

    def _group_norm(self, node: torch.fx.Node, name: str, module: nn.GroupNorm, source: torch.fx.Node) -> Any:
        """GroupNorm normalises each group of C/G channels together (FCOS's and RetinaNet's
        heads): with every group whole on one node it is local, like a grouped conv. Each
        node's module then runs its own groups, read from the length of its sliced weight."""
        if not module.affine:
            raise DiscoZooError(f"{self._where(node)}: GroupNorm(affine=False) has no per-channel weight from which a "
                                "node could know its groups; DISCO splits GroupNorm(affine=True)")
        state = self._split_state(node, source)
        self.classes.set_unit(state, module.num_channels // module.num_groups,
                              f"{self._where(node)} (GroupNorm, {module.num_groups} groups)")
        for leaf in ("weight", "bias"):
            state = self._slice(node, f"{name}.{leaf}", state)
        return state

    def _function(self, node: torch.fx.Node, inputs: list[torch.fx.Node], states: list[Any]) -> Any:
        target = node.target
        is_method = node.op == "call_method"
        root_shape = target in _ROOT_SHAPE_METHODS if is_method else target in _ROOT_SHAPE_FUNCTIONS
        if root_shape and _ROOT in states and not any(isinstance(s, int) for s in states):
            return _ROOT  # reshaping the root's whole tensor after the head
        if (is_method and target in _KEEP_METHODS) or (not is_method and target in _KEEP_FUNCTIONS):
            if len(inputs) != 1:
                raise self._unmapped(node, "takes several tensors")
            if is_method and target in _REDUCING_METHODS and not _spatial_only(node, len(self._shape(inputs[0]))):
                raise self._unmapped(node, "reduces over batch or channels (only spatial dims are local)")
            return _ROOT if states[0] == _ROOT else self._split_state(node, inputs[0])
        if (is_method and target in _BINARY_METHODS) or (not is_method and target in _BINARY_FUNCTIONS):
            return self._join(node, inputs, states)
        if not is_method and target in _CONCAT_FUNCTIONS:
            return self._concat(node, inputs, states)
        if not is_method and target in _SHUFFLE_FUNCTIONS:
            factor = node.args[1] if len(node.args) > 1 else next(iter(node.kwargs.values()))
            return self._shuffle(node, states[0], int(factor), _SHUFFLE_FUNCTIONS[target] == "shuffle")
        raise self._unmapped(node)

    def _join(self, node: torch.fx.Node, inputs: list[torch.fx.Node], states: list[Any]) -> Any:
        """Elementwise op of tensors: one shared map. A per-channel constant (a buffer or
        parameter read with get_attr, e.g. a mean shift or a layer scale) is sliced by it."""
        split = [s for s in states if isinstance(s, int)]
        consts = [(source, state) for source, state in zip(inputs, states) if not isinstance(state, int) and state != _ROOT]
        if _ROOT in states:
            if split:
                raise DiscoZooError(f"{self._where(node)} joins a tensor that lives on the root only (after the head) "
                                    "with a split one; make the head the last layer of every branch it joins")
            self.root_consts.update(state.name for _, state in consts if isinstance(state, _Const))
            return _ROOT  # root holds the whole tensor: constants stay whole (replicated)
        out = split[0]
        for s in split[1:]:
            out = self.classes.union(out, s, self._where(node))
        width = self.classes.get(out).width
        if self._channels(node) != width:
            raise self._unmapped(node, "broadcasts over channels")
        for source, state in consts:
            shape = self._shape(source)
            channel = len(shape) - len(self._shape(node)) + 1  # the constant's dim aligned with channels
            if channel < 0 or shape[channel] == 1:
                continue  # the same value for every channel
            if not isinstance(state, _Const) or state.name not in self.state_names:
                raise DiscoZooError(
                    f"{self._where(node)} combines split channels with a per-channel value {source.name!r} of shape "
                    f"{list(shape)} that is not a state-dict tensor, so DISCO cannot slice it by node; make it a "
                    "registered (persistent) buffer or parameter, or fold it into the neighbouring conv")
            self.const_uses.append((state.name, channel, out, self._where(node)))
        return out

    def _concat(self, node: torch.fx.Node, inputs: list[torch.fx.Node], states: list[Any]) -> Any:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        ndim = len(self._shape(node))
        if any(not isinstance(s, int) for s in states):
            raise DiscoZooError(f"{self._where(node)} concatenates a tensor that is not split by channels (a constant "
                                "or a root-only tensor) with split ones; DISCO cannot place it")
        if dim % ndim != 1:
            return self._join(node, inputs, states)  # along batch/space: the channels line up
        out = self.classes.new(self._channels(node), node.name)
        parts = list(states)
        self.classes.get(out).derived.append((
            self._where(node), lambda: [k for s in parts for k in self.classes.node_map(s)]))
        return out

    def _shuffle(self, node: torch.fx.Node, state: Any, factor: int, up: bool) -> Any:
        if state == _ROOT:
            return _ROOT
        if not isinstance(state, int):
            raise self._unmapped(node)
        block = factor * factor
        out = self.classes.new(self._channels(node), node.name)
        source = state
        if up:  # output c <- input channels c*r^2 .. c*r^2 + r^2 - 1 (kept whole on one node)
            self.classes.set_unit(state, block, self._where(node))
            make = lambda: self.classes.node_map(source)[::block]  # noqa: E731
        else:  # output c*r^2 + i <- input c
            make = lambda: [k for k in self.classes.node_map(source) for _ in range(block)]  # noqa: E731
        self.classes.get(out).derived.append((self._where(node), make))
        return out

    def _outputs(self, node: torch.fx.Node) -> None:
        leaves, _ = tree_flatten_with_path(node.args[0])
        for path, leaf in leaves:
            if isinstance(leaf, torch.fx.Node) and isinstance(self.state.get(leaf.name), int):
                self.outputs.append((output_key(path), self.state[leaf.name]))

    # -- the partition --------------------------------------------------------------------
    def _build(self) -> Partition:
        part, groups = self.part, self.classes.groups
        if not self.layers:
            raise DiscoZooError(f"{type(self.model).__name__} has no conv/linear layer on its image path to split")
        if self.classes.find(self.layers[0].src) != self.classes.find(self.image):
            raise DiscoZooError(f"{self.layers[0].name}: the first split layer must read the image (the image is "
                                "scattered by the first layer's input channels)")
        for use in self.layers:
            part.add_layer(use.name, use.kind, groups(use.src), groups(use.dst), mode=use.mode).calls = len(use.nodes)
        for name, count, src, dst in self.grouped:
            split = GroupedSplit(name, count, groups(src), groups(dst))
            if any(not g for g in split.out_groups):
                raise DiscoZooError(f"{name}: a grouped conv with {count} groups leaves a node without a group; "
                                    "use fewer nodes or other ratios")
            part.grouped[name] = split
        for name, (dim, cls, _) in self.tensors.items():
            part.tensors[name] = TensorSplit(name, dim, groups(cls))
        for name, dim, cls, where in self.const_uses:
            split = TensorSplit(name, dim, groups(cls))
            if name in self.root_consts or (name in part.tensors and part.tensors[name] != split):
                raise DiscoZooError(f"{where}: the constant {name!r} is used with tensors on different channel maps "
                                    "(or also after the head); DISCO can slice it one way only. Give each use its "
                                    "own buffer")
            part.tensors[name] = split
        part.outputs = [OutputGather(key, groups(cls)) for key, cls in self.outputs]
        return part


def graph_partition(model: nn.Module, nodes: int, ratios: Sequence[float], family: str = "graph") -> Partition:
    """The partition (masks open) of any traceable conv DAG, by map propagation."""
    from disco_zoo.graph.layer_graph import _symbolic_trace

    try:
        gm = _symbolic_trace(model)
    except DiscoZooError as err:
        raise DiscoZooError(f"no DISCO adapter for {type(model).__name__}: the graph adapter needs a torch.fx "
                            f"trace ({err})") from None
    return _Propagation(model, gm, family, nodes, [float(r) for r in ratios]).run()
