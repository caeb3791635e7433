"""Trace a model into a DAG of layers with shapes, parameters, FLOPs and bytes.

torch.fx gives the graph (with timm's no-trace modules and functions as leaves, so
timm models trace as timm intends); an fx Interpreter runs it once on a zero input to
record every node's output shape, and each node runs under its own
``FlopCounterMode`` so per-layer FLOPs add up to the model's FlopCounterMode total.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from disco_zoo.errors import DiscoZooError

__all__ = ["Layer", "LayerGraph", "trace_model"]

_MODULE_KINDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), "conv"),
    (nn.Linear, "linear"),
    ((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), "bn"),
    ((nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d), "norm"),
    (
        (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU),
        "act",
    ),
    ((nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), "pool"),
    (nn.Flatten, "flatten"),
    ((nn.Dropout, nn.Identity), "identity"),
)

_FUNCTION_KINDS: dict[Any, str] = {
    operator.add: "add",
    torch.add: "add",
    operator.iadd: "add",
    operator.mul: "mul",
    torch.mul: "mul",
    torch.cat: "concat",
    torch.concat: "concat",
    torch.flatten: "flatten",
    operator.getitem: "getitem",
    F.relu: "act",
    F.gelu: "act",
    F.silu: "act",
    torch.relu: "act",
    torch.sigmoid: "act",
    F.adaptive_avg_pool2d: "pool",
    F.avg_pool2d: "pool",
    F.max_pool2d: "pool",
    F.layer_norm: "norm",
    F.linear: "linear",
    F.conv2d: "conv",
    F.scaled_dot_product_attention: "attention",
    torch.matmul: "matmul",
    operator.matmul: "matmul",
}

_METHOD_KINDS: dict[str, str] = {
    "add": "add",
    "add_": "add",
    "mul": "mul",
    "mul_": "mul",
    "relu": "act",
    "relu_": "act",
    "sigmoid": "act",
    "softmax": "act",
    "mean": "pool",
    "flatten": "flatten",
    "view": "reshape",
    "reshape": "reshape",
    "permute": "reshape",
    "transpose": "reshape",
    "contiguous": "reshape",
    "unbind": "getitem",
    "chunk": "getitem",
    "split": "getitem",
}


@dataclass
class Layer:
    """One node of the traced model, with the figures accounting and planning need."""

    name: str
    op: str
    target: str
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shape: tuple[int, ...] = ()
    params: int = 0
    flops: int = 0
    output_bytes: int = 0
    predecessors: list[str] = field(default_factory=list)
    successors: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "target": self.target,
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shape": list(self.output_shape),
            "params": self.params,
            "flops": self.flops,
            "output_bytes": self.output_bytes,
            "predecessors": list(self.predecessors),
            "successors": list(self.successors),
            "attrs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.attrs.items()},
        }


@dataclass
class LayerGraph:
    """A model as a DAG of layers, in topological order."""

    layers: dict[str, Layer]
    graph_module: torch.fx.GraphModule
    input_shape: tuple[int, ...]
    dtype_bytes: int
    total_params: int

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers.values())

    def __getitem__(self, name: str) -> Layer:
        return self.layers[name]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def total_flops(self) -> int:
        return sum(layer.flops for layer in self)

    def of_op(self, *ops: str) -> list[Layer]:
        """Layers whose op is one of ``ops``, in topological order."""
        return [layer for layer in self if layer.op in ops]

    def module_of(self, layer: Layer) -> nn.Module | None:
        """The module a call_module layer runs (None for functions and methods)."""
        try:
            return self.graph_module.get_submodule(layer.target)
        except AttributeError:
            return None


class _LeafTracer(torch.fx.Tracer):
    """fx tracer that keeps conv/linear subclasses and timm's no-trace modules whole."""

    def __init__(self, leaf_types: tuple[type[nn.Module], ...], autowrap: tuple[Any, ...]) -> None:
        super().__init__(autowrap_functions=autowrap)
        self._leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _timm_leaves() -> tuple[tuple[type[nn.Module], ...], tuple[Any, ...]]:
    """timm's registered no-trace modules/functions (empty when timm is absent)."""
    try:
        import timm.models  # noqa: F401  (importing registers the no-trace sets)
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # pragma: no cover - timm is a dependency
        return (), ()
    functions = tuple(f for f in get_notrace_functions() if callable(f))
    return tuple(get_notrace_modules()), functions


def _symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    leaf_types, autowrap = _timm_leaves()
    tracer = _LeafTracer(leaf_types, autowrap)
    try:
        graph = tracer.trace(model)
    except Exception as err:  # fx raises many types; the user needs one message
        raise DiscoZooError(
            f"could not trace {type(model).__name__} with torch.fx ({type(err).__name__}: {err}). "
            "Models with data-dependent control flow need their dynamic parts registered as "
            "leaf modules (timm.layers.register_notrace_module)."
        ) from err
    return torch.fx.GraphModule(tracer.root, graph, type(model).__name__)


def _classify(node: torch.fx.Node, gm: torch.fx.GraphModule) -> tuple[str, str, dict[str, Any], int]:
    """(op kind, target name, attrs, params) for an fx node."""
    if node.op == "placeholder":
        return "input", node.target, {}, 0
    if node.op == "output":
        return "output", "output", {}, 0
    if node.op == "get_attr":
        value = _fetch_attr(gm, str(node.target))
        return "param", str(node.target), {}, value.numel() if isinstance(value, nn.Parameter) else 0
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        kind = next((k for types, k in _MODULE_KINDS if isinstance(module, types)), "module")
        return kind, str(node.target), _module_attrs(module), sum(p.numel() for p in module.parameters())
    if node.op == "call_method":
        return _METHOD_KINDS.get(str(node.target), "other"), str(node.target), {}, 0
    kind = _FUNCTION_KINDS.get(node.target, "other")
    attrs: dict[str, Any] = {}
    if kind == "concat":
        attrs["dim"] = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    name = getattr(node.target, "__name__", str(node.target))
    return kind, name, attrs, 0


def _fetch_attr(gm: torch.fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _module_attrs(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return {
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": tuple(module.kernel_size),
            "stride": tuple(module.stride),
            "padding": module.padding if isinstance(module.padding, str) else tuple(module.padding),
            "dilation": tuple(module.dilation),
            "groups": module.groups,
        }
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
        attrs = {"kernel_size": pair(module.kernel_size), "stride": pair(module.stride), "padding": pair(module.padding)}
        if isinstance(module, nn.MaxPool2d):
            attrs["dilation"] = pair(module.dilation)
            attrs["ceil_mode"] = module.ceil_mode
        return attrs
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return {"output_size": module.output_size}
    return {}


def _tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    """fx nodes among ``node``'s (nested) args/kwargs, in order, duplicates kept."""
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) or n)
    return found


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            tensor = _first_tensor(item)
            if tensor is not None:
                return tensor
    return None


def trace_model(
    model: nn.Module,
    input_shape: tuple[int, ...] = (1, 3, 224, 224),
    dtype_bytes: int = 4,
) -> LayerGraph:
    """Trace ``model`` (put in eval mode) and measure every layer on a zero input.

    A model with pre/post-processing stages (:mod:`disco_zoo.graph.stages`) is its core,
    measured on the input its pre-processing makes of ``input_shape``."""
    if len(input_shape) != 4:
        raise DiscoZooError(f"input_shape must be (batch, channels, height, width), got {input_shape}")
    from disco_zoo.graph.stages import core_input_shape, core_of

    input_shape = core_input_shape(model.eval(), input_shape)
    model = core_of(model).eval()
    gm = _symbolic_trace(model)
    values: dict[str, Any] = {}
    flops: dict[str, int] = {}

    class _Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            counter = FlopCounterMode(display=False)
            with counter:
                result = super().run_node(n)
            values[n.name] = result
            flops[n.name] = counter.get_total_flops()
            return result

    with torch.no_grad():
        try:
            _Recorder(gm).run(torch.zeros(input_shape))
        except RuntimeError as err:
            raise DiscoZooError(
                f"{type(model).__name__} cannot run on input of shape {tuple(input_shape)}: {err}. "
                "Pick an --input-size the model accepts."
            ) from err

    layers: dict[str, Layer] = {}
    for node in gm.graph.nodes:
        kind, target, attrs, params = _classify(node, gm)
        inputs = [n for n in _tensor_args(node) if _first_tensor(values.get(n.name)) is not None]
        out = _first_tensor(values.get(node.name))
        if node.op == "output":
            out = _first_tensor(values.get(inputs[0].name)) if inputs else None
        if kind in ("add", "mul") and len(inputs) < 2:
            kind = "scale" if kind == "mul" else "bias"  # x + scalar is not a merge
        layers[node.name] = Layer(
            name=node.name,
            op=kind,
            target=target,
            input_shapes=[tuple(_first_tensor(values[n.name]).shape) for n in inputs],
            output_shape=tuple(out.shape) if out is not None else (),
            params=params,
            flops=flops.get(node.name, 0),
            output_bytes=(out.numel() * dtype_bytes) if out is not None and node.op != "output" else 0,
            predecessors=[n.name for n in inputs],
            attrs=attrs,
        )
    for layer in layers.values():
        for pred in dict.fromkeys(layer.predecessors):
            layers[pred].successors.append(layer.name)
    return LayerGraph(
        layers=layers,
        graph_module=gm,
        input_shape=tuple(input_shape),
        dtype_bytes=dtype_bytes,
        total_params=sum(p.numel() for p in model.parameters()),
    )
