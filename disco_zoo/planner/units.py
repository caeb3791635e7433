"""Execution units: which rows of which inputs each device needs for its share of a layer.

A layer's output is split along one axis, its *rows*: the height (dim 2) of a 4-D
activation. Tensors that are not 4-D (flattened features, logits) have a single row,
so the same bookkeeping covers them. A unit is (layer, device, output rows); its input
requirements follow from the layer's kind alone, never from the model:

* conv / max-avg pool: output rows [a, b) need input rows
  [a*s - p, (b-1)*s - p + d*(k-1) + 1) clipped to the input (the receptive-field halo);
* elementwise ops and merges (bn, activations, add, mul, channel concat): the same rows
  of every input, or the whole input when it is broadcast along the height (an SE gate);
* anything else (flatten, linear, global/adaptive pool, unknown ops) is *whole*: one
  device computes all of it from all rows of all inputs.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from disco_zoo.graph import Layer, LayerGraph

Range = tuple[int, int]
Placement = dict[str, list[Range]]  # layer -> per-device output row range (a == b: none)

_ROWWISE = {"bn", "act", "identity", "bias", "scale", "add", "mul", "concat"}
_T = TypeVar("_T")


def _per_layer(fn: Callable[[Any], _T]) -> Callable[[Any], _T]:
    """Memoise a pure function of a (never mutated) traced layer, by identity.

    The planner asks the same layer's window and splittability tens of thousands of
    times per plan; layers are unhashable dataclasses, so the cache keys on ``id`` and
    holds a weak reference to tell a reused id from the same layer.
    """
    cache: dict[int, tuple[weakref.ref, _T]] = {}

    def cached(layer: Any) -> _T:
        hit = cache.get(id(layer))
        if hit is not None and hit[0]() is layer:
            return hit[1]
        value = fn(layer)
        if len(cache) > 100_000:
            cache.clear()
        cache[id(layer)] = (weakref.ref(layer), value)
        return value

    cached.__doc__ = fn.__doc__
    return cached


@_per_layer
def extent(layer: Layer) -> int:
    """Number of rows of a layer's output (height for 4-D, else 1)."""
    return int(layer.output_shape[2]) if len(layer.output_shape) == 4 else 1


def row_bytes(layer: Layer) -> float:
    return layer.output_bytes / extent(layer)


def compute_seconds(layer: Layer, rows: int, rate: float) -> float:
    """Seconds a device of ``rate`` FLOP/s takes for ``rows`` of ``layer`` (FLOPs are linear in rows)."""
    return rows * (layer.flops / extent(layer)) / rate if rows > 0 else 0.0


@_per_layer
def _window(layer: Layer) -> tuple[int, int, int, int] | None:
    """(kernel, stride, padding, dilation) along the height, or None if not a row window."""
    a = layer.attrs
    if "kernel_size" not in a or "stride" not in a or isinstance(a.get("padding"), str):
        return None
    first = lambda v: int(v[0]) if isinstance(v, (tuple, list)) else int(v)  # noqa: E731
    return first(a["kernel_size"]), first(a["stride"]), first(a.get("padding", 0)), first(a.get("dilation", 1))


@_per_layer
def splittable(layer: Layer) -> bool:
    """Can devices compute disjoint row ranges of this layer independently?"""
    if len(layer.output_shape) != 4 or not layer.predecessors:
        return False
    if any(len(s) != 4 for s in layer.input_shapes):
        return False
    if layer.op in ("conv", "pool"):
        return _window(layer) is not None
    if layer.op == "concat":
        return layer.attrs.get("dim") in (1, -3)
    return layer.op in _ROWWISE


@_per_layer
def _row_maps(layer: Layer) -> list[tuple[int, tuple[int, int, int, int] | None, bool]]:
    """Per input k: (its height, the row window or None, needed whole): what :func:`input_rows` reads."""
    maps = []
    for shape in layer.input_shapes:
        h_in = int(shape[2]) if len(shape) == 4 else 1
        if not splittable(layer):
            maps.append((h_in, None, True))
            continue
        win = _window(layer) if layer.op in ("conv", "pool") else None
        maps.append((h_in, win, win is None and h_in != extent(layer)))  # whole: broadcast along the height
    return maps


def input_rows(layer: Layer, k: int, rows: Range) -> Range:
    """Rows of predecessor ``k``'s output that output ``rows`` of ``layer`` need."""
    a, b = rows
    if a >= b:
        return (0, 0)
    h_in, win, whole = _row_maps(layer)[k]
    if whole:
        return (0, h_in)
    if win is not None:
        kernel, stride, pad, dil = win
        lo = a * stride - pad
        hi = (b - 1) * stride - pad + dil * (kernel - 1) + 1
        lo, hi = max(0, min(lo, h_in)), max(0, min(hi, h_in))
        return (lo, max(lo, hi))
    return (a, b)


def overlap(x: Range, y: Range) -> int:
    return max(0, min(x[1], y[1]) - max(x[0], y[0]))


@dataclass
class Source:
    device: int
    rows: Range
    bytes: int


@dataclass
class InputRequirement:
    layer: str
    rows: Range
    sources: list[Source] = field(default_factory=list)


@dataclass
class Forward:
    layer: str
    device: int
    rows: Range
    bytes: int


@dataclass
class Unit:
    """Device ``device`` computes rows ``rows`` of ``layer`` (its operator)."""

    layer: str
    device: int
    rows: Range
    inputs: list[InputRequirement] = field(default_factory=list)
    forward: list[Forward] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "device": self.device,
            "rows": list(self.rows),
            "inputs": [{"layer": r.layer, "rows": list(r.rows),
                        "sources": [{"device": s.device, "rows": list(s.rows), "bytes": s.bytes} for s in r.sources]}
                       for r in self.inputs],
            "forward": [{"layer": f.layer, "device": f.device, "rows": list(f.rows), "bytes": f.bytes}
                        for f in self.forward],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Unit":
        """The inverse of :meth:`to_dict` (a plan's stored units)."""
        def rows(value: Any) -> Range:
            a, b = value
            return (int(a), int(b))

        return cls(
            str(data["layer"]), int(data["device"]), rows(data["rows"]),
            [InputRequirement(str(r["layer"]), rows(r["rows"]),
                              [Source(int(s["device"]), rows(s["rows"]), int(s["bytes"])) for s in r["sources"]])
             for r in data["inputs"]],
            [Forward(str(f["layer"]), int(f["device"]), rows(f["rows"]), int(f["bytes"])) for f in data["forward"]],
        )


def build_units(graph: LayerGraph, placement: Placement) -> list[Unit]:
    """Units of every layer with their input requirements and forwarding tables."""
    units: dict[tuple[str, int], Unit] = {}
    for layer in graph:
        held = [(pred, [(src, have) for src, have in enumerate(placement[pred]) if have[1] > have[0]],
                 row_bytes(graph[pred])) for pred in layer.predecessors]
        for dev, rows in enumerate(placement[layer.name]):
            if rows[0] >= rows[1]:
                continue
            unit = Unit(layer.name, dev, rows)
            for k, (pred, haves, rb) in enumerate(held):
                need = input_rows(layer, k, rows)
                req = InputRequirement(pred, need)
                for src, have in haves:
                    got = (max(need[0], have[0]), min(need[1], have[1]))
                    if got[1] > got[0]:
                        nbytes = int(round((got[1] - got[0]) * rb)) if src != dev else 0
                        req.sources.append(Source(src, got, nbytes))
                        units[(pred, src)].forward.append(Forward(layer.name, dev, got, nbytes))
                unit.inputs.append(req)
            units[(layer.name, dev)] = unit
    return list(units.values())
