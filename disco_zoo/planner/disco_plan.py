"""Place a DISCO model on a device profile: which device runs which node, and at what split.

Why: a DISCO variant is trained for N nodes at fixed ratios, but the devices a user has
differ in speed, memory and links. For every way of putting the N nodes on N of the
profile's devices (an unused device is allowed), the planner predicts the latency with
the one model of time (:func:`disco_zoo.timing.predict_latency` over the programs that
:mod:`disco_zoo.planner.disco_programs` derives from the partition and the devices'
rates), refuses placements where a node's shard and activations do not fit the device's
memory, and keeps the fastest.

For the split itself, :func:`ratio_sweep` rebuilds the partition of the dense architecture
at other ratios, keeps each layer's trained share of selected channels per pair (so the
traffic per layer scales with the channels each node holds), and predicts the latency
at each ratio on the chosen devices. The output says which published variant is closest
to the optimum and what the optimum would gain over it: that is a prediction, since a
variant at another ratio must be trained (``disco-zoo sparsify --ratios``) before it runs.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from disco_zoo.disco.partition import Partition
from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.disco_programs import disco_programs
from disco_zoo.planner.profiles import Profile
from disco_zoo.timing.replay import predict_latency

__all__ = ["DiscoFacts", "Placement", "disco_facts", "place_disco", "ratio_sweep", "rescaled_partition",
           "node_memory_bytes", "RATIO_GRID"]

COMPUTE_BYTES = 4  # fp32: what a node holds its weights in while it computes (shards.py)
RATIO_GRID = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # node 0's share, 0.2 .. 0.8


@dataclass
class DiscoFacts:
    """What placing a DISCO model needs, read once from the model: its partition, the
    (input, output) shape of every exchanging layer in execution order, the FLOPs of one
    weight entry per layer, the bytes of one weight entry per layer (kernel x fp32), and
    each node's memory from its real shard (fp32 parameters plus the activation peak)."""

    name: str
    partition: Partition
    input_shape: tuple[int, ...]
    shapes: dict[str, Any]
    flops_per_entry: dict[str, float]
    entry_bytes: dict[str, int]
    memory_per_node: list[int]  # shard parameter bytes + activation peak, per node
    dtype_bytes: int = 4
    grouped_flops: dict[str, float] = field(default_factory=dict)  # dense FLOPs of each grouped conv call


def disco_facts(model: Any, name: str, input_shape: tuple[int, ...], dtype_bytes: int = 4) -> DiscoFacts:
    """Read :class:`DiscoFacts` off a loaded DISCO model (its accounting and one forward)."""
    from disco_zoo.disco.accounting import calls_of, disco_accounting, layer_shapes
    from disco_zoo.disco.adapters import get_partition

    part = get_partition(model)
    acc = disco_accounting(model, input_shape, dtype_bytes)
    shapes = layer_shapes(model, input_shape)
    modules = dict(model.named_modules())
    entry_bytes = {}
    for layer_name, layer in part.layers.items():
        weight = modules[layer_name].weight
        entry_bytes[layer_name] = weight.numel() // (layer.out_channels * layer.in_channels) * COMPUTE_BYTES
    # a conv costs 2 FLOPs per weight element per output position (FlopCounterMode's count)
    grouped = {key: 2.0 * modules[g].weight.numel() * _positions(shapes[key][1])
               for g in part.grouped for key in calls_of(shapes, g)}  # per call (a shared conv runs at each)
    # in a device's memory every node computes in fp32, whatever its shard's storage dtype
    memory = [p * COMPUTE_BYTES + a for p, a in zip(acc.params_per_node, acc.act_peak_per_node)]
    return DiscoFacts(name, part, tuple(input_shape), shapes, acc.flops_per_entry, entry_bytes, memory, dtype_bytes,
                      grouped)


def _positions(out_shape: tuple[int, ...]) -> int:
    """Batch x spatial positions of a conv output (everything but the channel dim)."""
    return math.prod(out_shape) // out_shape[1]


@dataclass(frozen=True)
class Placement:
    """Node k runs on device ``devices[k]``; the prediction and what it costs."""

    devices: tuple[int, ...]
    ratios: tuple[float, ...]
    latency_s: float
    bytes_total: int
    memory_per_node: tuple[int, ...]

    def to_dict(self, profile: Profile) -> dict[str, Any]:
        return {"devices": [profile.devices[d].name for d in self.devices], "ratios": list(self.ratios),
                "latency_s": self.latency_s, "bytes": self.bytes_total, "memory_per_node": list(self.memory_per_node)}


def _predict(facts: DiscoFacts, part: Partition, profile: Profile, devices: Sequence[int],
             message_cost: float = 0.0) -> tuple[float, int]:
    rates = [profile.devices[d].rate("conv") for d in devices]
    programs = disco_programs(part, facts.shapes, facts.flops_per_entry, rates, facts.input_shape, facts.dtype_bytes,
                              facts.grouped_flops)
    links = {(a, b): profile.link(devices[a], devices[b]) for a in range(part.nodes) for b in range(part.nodes) if a != b}
    return predict_latency(programs, links, message_cost), sum(programs.bytes_per_pair.values())


def place_disco(facts: DiscoFacts, profile: Profile, part: Partition | None = None,
                memory: Sequence[int] | None = None) -> list[Placement]:
    """Every placement of the nodes on distinct devices that fits in memory, fastest first.

    A profile with fewer devices than nodes, or one where no placement fits, is a clear error.
    """
    part = part or facts.partition
    memory = list(memory if memory is not None else facts.memory_per_node)
    n, d = part.nodes, len(profile)
    if d < n:
        raise DiscoZooError(f"{facts.name} is split over {n} nodes but profile {profile.name!r} has {d} device(s); "
                            f"give a profile with at least {n} devices, or use a {d}-node variant.")
    placements, unlinked = [], set()
    for devices in itertools.permutations(range(d), n):
        if any(memory[k] > profile.devices[dev].memory_bytes for k, dev in enumerate(devices)):
            continue
        missing = [(a, b) for a in devices for b in devices if a < b and not profile.has_link(a, b)]
        if missing:
            unlinked.update(missing)
            continue
        latency, nbytes = _predict(facts, part, profile, devices)
        placements.append(Placement(tuple(devices), tuple(part.ratios), latency, nbytes, tuple(memory)))
    if not placements and unlinked:
        pairs = ", ".join(f"{profile.devices[a].name}-{profile.devices[b].name}" for a, b in sorted(unlinked))
        raise DiscoZooError(f"every placement of {facts.name} that fits in memory needs a link {profile.name!r} does "
                            f"not have ({pairs}): its {n} nodes all talk to each other; add those pairs to links.pairs")
    if not placements:
        need = ", ".join(f"node {k}: {m / 2**20:.1f} MiB" for k, m in enumerate(memory))
        have = ", ".join(f"{dev.name}: {dev.memory_bytes / 2**20:.1f} MiB" for dev in profile.devices)
        raise DiscoZooError(f"no device of {profile.name!r} has memory for a shard of {facts.name} ({need}; devices {have}); "
                            "use devices with more memory or a variant over more nodes.")
    return sorted(placements, key=lambda p: p.latency_s)


def rescaled_partition(dense_model: Any, trained: Partition, ratios: Sequence[float]) -> Partition:
    """The partition of ``dense_model`` at ``ratios``, each layer keeping the trained share
    of selected channels per pair (the first channels of the peer's new group: which
    ones does not change any cost) and of dropped own channels."""
    from disco_zoo.disco.adapters import build_partition

    part = build_partition(dense_model, trained.nodes, list(ratios))
    n = part.nodes
    for name, layer in part.layers.items():
        old = trained.layers.get(name)
        if old is None or old.in_channels != layer.in_channels or old.out_channels != layer.out_channels:
            raise DiscoZooError(f"layer {name} of the trained partition does not match the dense architecture; "
                                "rescaling needs the variant's own dense model")
        if layer.mode != "split":
            continue
        for k in range(n):
            for j in range(n):
                if j != k:
                    share = len(old.selected[k][j]) / max(len(old.in_groups[j]), 1)
                    layer.selected[k][j] = list(layer.in_groups[j][:round(share * len(layer.in_groups[j]))])
        if old.dropped:
            layer.dropped = [list(layer.in_groups[k][:round(len(old.dropped[k]) / max(len(old.in_groups[k]), 1)
                                                           * len(layer.in_groups[k]))]) for k in range(n)]
    part.check()
    return part


def node_memory_bytes(facts: DiscoFacts, part: Partition) -> list[int]:
    """Per-node memory of ``part`` estimated from the trained model's measured figures:
    each node's conv/linear weight entries at their storage bytes, scaled so that the
    trained partition gives exactly its measured memory (what is not a weight entry,
    BatchNorm vectors and activations, follows each node's share the same way)."""
    def entries(p: Partition) -> list[float]:
        out = [0.0] * p.nodes
        for name, layer in p.layers.items():
            for k in range(p.nodes):
                out[k] += len(layer.rows(k)) * len(layer.columns(k)) * facts.entry_bytes[name]
        return out

    base, new = entries(facts.partition), entries(part)
    return [int(round(m * (new[k] / base[k] if base[k] else 1.0))) for k, m in enumerate(facts.memory_per_node)]


def ratio_sweep(facts: DiscoFacts, dense_model: Any, profile: Profile, devices: Sequence[int],
                grid: Sequence[float] = RATIO_GRID) -> list[Placement]:
    """Predicted latency of a 2-node variant at each node-0 share in ``grid`` on ``devices``
    (placements whose estimated memory does not fit are left out)."""
    if facts.partition.nodes != 2:
        raise DiscoZooError("the split-ratio sweep is for 2-node variants; for more nodes give --ratios to sparsify")
    out = []
    for share in grid:
        part = rescaled_partition(dense_model, facts.partition, (share, 1.0 - share))
        memory = node_memory_bytes(facts, part)
        if any(memory[k] > profile.devices[d].memory_bytes for k, d in enumerate(devices)):
            continue
        latency, nbytes = _predict(facts, part, profile, devices)
        out.append(Placement(tuple(devices), (share, round(1.0 - share, 2)), latency, nbytes, tuple(memory)))
    return out
