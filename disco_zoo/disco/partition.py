"""The partition: which node owns which channels of every tensor a conv/linear touches.

One JSON-serialisable description per model drives masked training, accounting, the
per-node shard files and distributed execution, so all four agree by construction.

For a conv/linear in ``split`` mode, node k holds input channels ``in_groups[k]``,
computes output channels ``out_groups[k]`` and receives from node j != k only the
channels ``selected[k][j]`` (S_kj, a subset of ``in_groups[j]``):

    Y_k = W[O_k, I_k] X_k + sum_{j != k} W[O_k, S_kj] X[S_kj]

Optional compute pruning drops some of node k's own channels from its diagonal block
(``dropped[k]``, a subset of ``in_groups[k]``); node k still holds and may send them.

In ``reduce`` mode (a classifier head) node k computes the partial product
``W[:, I_k] X_k`` and sends it to ``root``, which adds the partials (and the bias).
Tensors that are not conv/linear weights but carry split channels (norm scales,
BatchNorm statistics, position embeddings, relative position bias tables) are listed
in ``tensors`` with the dimension and index groups to slice; LayerNorms over a split
dimension are listed in ``norms`` (each node sends 2 numbers per token to every other
node: its partial sum and sum of squares). Every other state tensor is replicated.

Grouped and depthwise convs (``grouped``) keep each of their groups whole on one node:
node k computes the groups whose input channels it holds, so they exchange nothing;
their weight and bias are sliced by output channel (listed in ``tensors``). Every model
output whose channels are split across nodes is gathered on ``root`` after the forward
(``outputs``, one message per node and output, tag :func:`output_tag`).

A layer may be called more than once in one forward (a detector head shared across FPN
levels): it keeps one split (one mask set, one weight shard) for every call, and
``calls`` says how many there are. Each call exchanges its own messages, named by
:func:`call_key` (``name`` for the first call, ``name@1``, ``name@2``, ... after it),
the key the accounting, the runtime's tags and the planner's programs share.
"""
from __future__ import annotations

import random

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from disco_zoo.errors import DiscoZooError

__all__ = [
    "LayerSplit", "TensorSplit", "NormSplit", "GroupedSplit", "OutputGather", "Partition", "output_tag",
    "output_key", "call_key", "layer_of",
    "contiguous_groups", "interleave_groups", "to_runs", "from_runs",
]


def contiguous_groups(channels: int, nodes: int, ratios: Sequence[float] | None = None) -> list[list[int]]:
    """Contiguous channel index groups, the same rounding as dense within-layer parallelism."""
    from disco_zoo.graph.accounting import channel_split  # no torch import

    groups, start = [], 0
    for size in channel_split(channels, nodes, ratios):
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def to_runs(ids: list[int]) -> list[list[int]]:
    """[0, 1, 2, 5] -> [[0, 3], [5, 6]]: half-open runs keep config.json small."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1][1] += 1
        else:
            runs.append([i, i + 1])
    return runs


def from_runs(runs: list[list[int]]) -> list[int]:
    return [i for start, stop in runs for i in range(start, stop)]


def interleave_groups(groups: list[list[int]], width: int, copies: int) -> list[list[int]]:
    """Groups for a tensor made of ``copies`` stacked blocks of ``width`` channels.

    qkv's output is [q | k | v] and Swin's patch merging input is 4 neighbours
    side by side: the node owning channel c owns c + i * width in every block.
    """
    return [[i * width + c for i in range(copies) for c in group] for group in groups]


@dataclass
class LayerSplit:
    """One conv/linear: who holds, computes and receives which channels."""

    name: str  # module qualified name
    kind: str  # "conv" | "linear"
    mode: str  # "split" | "reduce"
    in_channels: int
    out_channels: int
    in_groups: list[list[int]]  # node -> input channels it holds
    out_groups: list[list[int]]  # node -> output channels it computes (reduce: all on root)
    selected: list[list[list[int]]]  # selected[k][j] = S_kj, sorted; [] when k == j
    root: int = 0  # reduce mode: the node that sums the partial products
    dropped: list[list[int]] = field(default_factory=list)  # dropped[k]: own channels node k skips
    calls: int = 1  # how many times one forward calls the layer (every call uses this split)

    def call_keys(self) -> list[str]:
        """The name of each call's exchange: ``name``, ``name@1``, ... (:func:`call_key`)."""
        return [call_key(self.name, i) for i in range(self.calls)]

    @property
    def nodes(self) -> int:
        return len(self.in_groups)

    def columns(self, k: int) -> list[int]:
        """Input channels node k's computation reads: its own group plus every S_kj."""
        if self.mode == "reduce":
            return list(self.in_groups[k])
        cols = set(self.in_groups[k]) - set(self.dropped[k] if self.dropped else [])
        for j in range(self.nodes):
            if j != k:
                cols.update(self.selected[k][j])
        return sorted(cols)

    def rows(self, k: int) -> list[int]:
        """Output rows of the weight node k stores (reduce mode: all of them)."""
        return list(range(self.out_channels)) if self.mode == "reduce" else list(self.out_groups[k])

    def check(self) -> None:
        if self.dropped and (self.mode == "reduce" or len(self.dropped) != self.nodes):
            raise DiscoZooError(f"{self.name}: dropped needs one list per node and a split layer")
        for k, own in enumerate(self.dropped):
            if not set(own) <= set(self.in_groups[k]):
                raise DiscoZooError(f"{self.name}: node {k} can only drop channels it holds")
        for k in range(self.nodes):
            for j in range(self.nodes):
                chosen = set(self.selected[k][j])
                if k == j and chosen:
                    raise DiscoZooError(f"{self.name}: selected[{k}][{k}] must be empty")
                if not chosen <= set(self.in_groups[j]):
                    raise DiscoZooError(f"{self.name}: S_{k}{j} has channels node {j} does not hold")
        if self.calls < 1:
            raise DiscoZooError(f"{self.name}: calls must be >= 1, got {self.calls}")


@dataclass
class TensorSplit:
    """A state tensor sliced along ``dim`` by ``groups`` (node -> indices)."""

    name: str
    dim: int
    groups: list[list[int]]


@dataclass
class NormSplit:
    """A LayerNorm over a split dimension: its statistics need 2 numbers per token per node."""

    name: str
    groups: list[list[int]]


@dataclass
class GroupedSplit:
    """A grouped/depthwise conv: node k computes whole groups, ``out_groups[k]`` from ``in_groups[k]``."""

    name: str
    conv_groups: int  # the conv's ``groups``
    in_groups: list[list[int]]  # node -> input channels (whole conv groups)
    out_groups: list[list[int]]  # node -> output channels of those conv groups

    def local_groups(self, k: int) -> int:
        """How many of the conv's groups node k computes."""
        out_channels = sum(len(g) for g in self.out_groups)
        return len(self.out_groups[k]) * self.conv_groups // out_channels


@dataclass
class OutputGather:
    """A model output whose channels are split: node k != root sends ``groups[k]`` to root."""

    key: str  # "" for a single-tensor output, else the pytree key ("out", "0", ...)
    groups: list[list[int]]
    root: int = 0


def output_key(path: Sequence[Any]) -> str:
    """The key of one leaf of a model output from its pytree path: "" for a lone tensor,
    "out" for ``{"out": y}``, "0" for ``(y, ...)``, "a.0" when nested."""
    return ".".join(str(getattr(e, "key", getattr(e, "idx", getattr(e, "name", e)))) for e in path)


def output_tag(key: str) -> str:
    """The wire tag (and accounting name) of the gather of model output ``key``."""
    return "output" if key == "" else f"output.{key}"


CALL_SEPARATOR = "@"  # module names never hold it (torch joins them with ".")


def call_key(name: str, call: int) -> str:
    """The key of call ``call`` (0-based) of layer ``name``: the name itself for the first
    call, so a layer called once keeps exactly its name as its tag and accounting key."""
    return name if call == 0 else f"{name}{CALL_SEPARATOR}{call}"


def layer_of(key: str) -> str:
    """The layer (or norm, or output tag) a call key belongs to: ``name@2`` -> ``name``."""
    return key.split(CALL_SEPARATOR, 1)[0]


_LIST_FIELDS = ("in_groups", "out_groups", "dropped", "groups")  # node -> channel index list


@dataclass
class Partition:
    """The whole model's split. ``layers`` is in forward order."""

    family: str
    nodes: int
    ratios: list[float]
    layers: dict[str, LayerSplit] = field(default_factory=dict)
    tensors: dict[str, TensorSplit] = field(default_factory=dict)
    norms: dict[str, NormSplit] = field(default_factory=dict)
    grouped: dict[str, GroupedSplit] = field(default_factory=dict)
    outputs: list[OutputGather] = field(default_factory=list)

    # -- building ---------------------------------------------------------------------
    def add_layer(
        self,
        name: str,
        kind: str,
        in_groups: list[list[int]],
        out_groups: list[list[int]],
        mode: str = "split",
        root: int = 0,
    ) -> LayerSplit:
        n = self.nodes
        in_ch = sum(len(g) for g in in_groups)
        out_ch = sum(len(g) for g in out_groups)
        if mode == "split":
            # masks open: node k receives every channel of every other node
            selected = [[[] if j == k else list(in_groups[j]) for j in range(n)] for k in range(n)]
        else:
            selected = [[[] for _ in range(n)] for _ in range(n)]
            out_groups = [list(range(out_ch)) if k == root else [] for k in range(n)]
        layer = LayerSplit(name, kind, mode, in_ch, out_ch, in_groups, out_groups, selected, root)
        self.layers[name] = layer
        return layer

    def add_tensor(self, name: str, dim: int, groups: list[list[int]]) -> None:
        self.tensors[name] = TensorSplit(name, dim, groups)

    def add_norm(self, module_name: str, groups: list[list[int]], affine: bool = True) -> None:
        """A LayerNorm over split channels: record its statistics and slice its scale/shift."""
        self.norms[module_name] = NormSplit(module_name, groups)
        if affine:
            self.add_tensor(f"{module_name}.weight", 0, groups)
            self.add_tensor(f"{module_name}.bias", 0, groups)

    # -- masks --------------------------------------------------------------------------
    def copy(self) -> "Partition":
        return Partition.from_dict(self.to_dict())

    def with_all_closed(self) -> "Partition":
        """A copy with every S_kj empty and nothing dropped: a block-diagonal model (no traffic)."""
        other = self.copy()
        for layer in other.layers.values():
            layer.selected = [[[] for _ in range(self.nodes)] for _ in range(self.nodes)]
            layer.dropped = []
        return other

    def with_all_open(self) -> "Partition":
        """A copy with every S_kj = I_j: the dense model."""
        other = self.copy()
        for layer in other.layers.values():
            layer.dropped = []
            if layer.mode == "split":
                n = self.nodes
                layer.selected = [[[] if j == k else list(layer.in_groups[j]) for j in range(n)] for k in range(n)]
        return other

    def with_random_selection(self, rng: "random.Random", keep: float | None = None) -> "Partition":
        """A copy with random S_kj: a ``keep`` fraction of I_j, or a random size when None.

        Exercises the runtime and benchmarks latency without a trained selection.
        """
        other = self.copy()
        for layer in other.layers.values():
            if layer.mode != "split":
                continue
            for k in range(self.nodes):
                for j in range(self.nodes):
                    if j != k:
                        owned = layer.in_groups[j]
                        size = rng.randint(0, len(owned)) if keep is None else round(keep * len(owned))
                        layer.selected[k][j] = sorted(rng.sample(owned, size))
        return other

    def check(self) -> None:
        for layer in self.layers.values():
            if layer.nodes != self.nodes:
                raise DiscoZooError(f"{layer.name}: {layer.nodes} groups for {self.nodes} nodes")
            layer.check()
        named = [(g.name, g.out_groups) for g in self.grouped.values()]
        named += [(output_tag(o.key), o.groups) for o in self.outputs]
        for name, groups in named:
            if len(groups) != self.nodes:
                raise DiscoZooError(f"{name}: {len(groups)} groups for {self.nodes} nodes")

    # -- JSON: every channel index list is stored as half-open runs [[start, stop], ...] --
    def to_dict(self) -> dict[str, Any]:
        def encode(item: Any) -> dict[str, Any]:
            d = asdict(item)
            for key in _LIST_FIELDS:
                if key in d:
                    d[key] = [to_runs(g) for g in d[key]]
            if "selected" in d:
                d["selected"] = [[to_runs(s) for s in row] for row in d["selected"]]
            if d.get("calls") == 1:
                del d["calls"]  # a layer called once: the JSON (and its digest) as before calls existed
            return d

        return {
            "family": self.family,
            "nodes": self.nodes,
            "ratios": list(self.ratios),
            "index_format": "runs",
            "layers": [encode(v) for v in self.layers.values()],
            "tensors": [encode(v) for v in self.tensors.values()],
            "norms": [encode(v) for v in self.norms.values()],
            "grouped": [encode(v) for v in self.grouped.values()],
            "outputs": [encode(v) for v in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Partition":
        def decode(d: dict[str, Any]) -> dict[str, Any]:
            d = dict(d)
            for key in _LIST_FIELDS:
                if key in d:
                    d[key] = [from_runs(g) for g in d[key]]
            if "selected" in d:
                d["selected"] = [[from_runs(s) for s in row] for row in d["selected"]]
            return d

        part = cls(data["family"], int(data["nodes"]), [float(r) for r in data["ratios"]])
        part.layers = {d["name"]: LayerSplit(**decode(d)) for d in data["layers"]}
        part.tensors = {d["name"]: TensorSplit(**decode(d)) for d in data["tensors"]}
        part.norms = {d["name"]: NormSplit(**decode(d)) for d in data["norms"]}
        # absent in configs written before grouped convs and output gathers existed
        part.grouped = {d["name"]: GroupedSplit(**decode(d)) for d in data.get("grouped", [])}
        part.outputs = [OutputGather(**decode(d)) for d in data.get("outputs", [])]
        part.check()
        return part

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Partition":
        return cls.from_dict(json.loads(text))

