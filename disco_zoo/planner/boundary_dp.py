"""The exact integer optimum of one layer's split, by dynamic programming over range boundaries.

Why not only the LP: devices take contiguous row ranges in profile order, so device i's
finish T_i depends on its own two boundaries (b_{i-1}, b_i) alone (its input rows, the
senders they overlap, its rows to compute). The layer's finish max_i T_i over a chain of
boundaries decomposes:

    D_0(b) = T_0(0, b),   D_i(b) = min( D_{i-1}(b),  min_{a < b} max(D_{i-1}(a), T_i(a, b)) )

and D_{n-1}(H) is the optimum over *every* integer split, the same number the brute force
of :func:`disco_zoo.planner.lp.brute_force_counts` finds, in O(n H^2) instead of O(H^(n-1)).
T_i(a, b) is evaluated for all (a, b) at once with numpy from the same per-layer model as
:func:`disco_zoo.planner.layer_cost.layer_timing` (links not contending). Among splits
finishing within ``TIE`` (relative) of the optimum, a second pass of the same recursion
(a sum instead of a max) takes the one receiving the fewest bytes, as the LP's tie-break
does: bytes that arrive before the bottleneck finishes are free for this layer but mean
misaligned splits that cost the layers after it.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.layer_cost import State
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.units import Placement, _per_layer, _window, compute_seconds, extent, input_rows, row_bytes

__all__ = ["TIE", "dp_split", "copies_split", "link_arrays", "readers"]

COPY_OPS = {"bn", "act", "identity", "bias", "scale"}
TIE = 1e-3  # finish times this close (relative) count as equal; then fewer bytes wins


def copies_split(graph: LayerGraph, layer: Layer) -> bool:
    """A zero-FLOP row-wise layer of one same-height input: it takes its input's split (no traffic, no compute)."""
    return (layer.op in COPY_OPS and layer.flops == 0 and len(layer.predecessors) == 1
            and extent(graph[layer.predecessors[0]]) == extent(layer) and len(layer.output_shape) == 4)


def readers(graph: LayerGraph, layer: Layer) -> list[tuple[Layer, int]]:
    """(layer, input index) of the layers that read ``layer``'s rows, looking through copying layers."""
    out, todo, seen = [], list(layer.successors), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        succ = graph[name]
        if copies_split(graph, succ):
            todo.extend(succ.successors)
            continue
        out.extend((succ, k) for k, pred in enumerate(succ.predecessors) if _reaches(graph, pred, layer.name))
    return out


def _reaches(graph: LayerGraph, name: str, target: str) -> bool:
    """Is ``name`` ``target`` itself or a chain of copying layers on top of it?"""
    while name != target:
        lay = graph[name]
        if not copies_split(graph, lay):
            return False
        name = lay.predecessors[0]
    return True


def _needed(layer: Layer, k: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Needed rows [lo(a), hi(b)) of predecessor k for output rows [a, b), as vectors over a and b."""
    shape = layer.input_shapes[k]
    h_in = int(shape[2]) if len(shape) == 4 else 1
    pos = np.arange(h + 1)
    win = _window(layer) if layer.op in ("conv", "pool") else None
    if win is not None:
        kernel, stride, pad, dil = win
        lo = np.clip(pos * stride - pad, 0, h_in)
        hi = np.clip((pos - 1) * stride - pad + dil * (kernel - 1) + 1, 0, h_in)
        return lo, hi
    if h_in != h:  # broadcast along the height: needed whole
        return np.zeros(h + 1, dtype=int), np.full(h + 1, h_in)
    return pos, pos


@_per_layer
def _needed_by_input(layer: Layer) -> list[tuple[np.ndarray, np.ndarray, tuple[bytes, bytes]]]:
    """:func:`_needed` of every input of ``layer``, with a key naming the pair (made once per layer)."""
    out = []
    for k in range(len(layer.predecessors)):
        lo, hi = _needed(layer, k, extent(layer))
        out.append((lo, hi, (lo.tobytes(), hi.tobytes())))
    return out


@functools.lru_cache(maxsize=4096)
def _overlap(need: tuple[bytes, bytes], start: int, end: int) -> np.ndarray:
    """Rows of a sender's range [start, end) that output rows [a, b) need, [a, b] (read-only).

    Why cached: a plan asks the same (needed rows, sender range) pair thousands of times
    (every input of a concat, every layer split alike); ``need``: :func:`_needed_by_input`'s key.
    """
    lo, hi = (np.frombuffer(part, dtype=int) for part in need)
    ov = np.maximum(np.minimum(hi[None, :], end) - np.maximum(lo[:, None], start), 0)
    ov.flags.writeable = False
    return ov


def link_arrays(profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """(latency, seconds per byte) of every ordered pair [sender, receiver]; 0 on the diagonal."""
    n = len(profile)
    lat, per_byte = np.zeros((n, n)), np.zeros((n, n))
    for j in range(n):
        for i in range(n):
            if i != j:
                link = profile.link(j, i)
                lat[j, i] = link.latency_s
                per_byte[j, i] = 8.0 / link.bandwidth_bps if link.bandwidth_bps else 0.0
    return lat, per_byte


def _device_costs(graph: LayerGraph, layer: Layer, placement: Placement, state: State, profile: Profile,
                  h: int, links: tuple[np.ndarray, np.ndarray], act: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(finish, bytes received) of each device ``act[i]`` for every range [a, b): arrays [i, a, b].

    One *group* per (input rows needed, sender, sender's range): inputs read through the
    same rows from the same sender range (a concat's many inputs) share one overlap array
    [g, a, b]; the bytes add up, and of their arrival lines t + per_byte * rb * overlap
    only the upper envelope matters. All groups and receivers are evaluated in one
    broadcast (the link arrays are 0 on the diagonal: a device's own rows arrive when it
    finished them). Scalars are gathered in Python and each array op done once: the
    arrays are small, so the number of numpy calls is what costs.
    """
    free = np.asarray(state.free, dtype=float)[act][:, None, None]
    groups: dict[tuple, list[tuple[float, float]]] = {}
    for pred, (_, _, need) in zip(layer.predecessors, _needed_by_input(layer)):
        rb = row_bytes(graph[pred])
        for j, (c, d) in enumerate(placement[pred]):
            if d > c:
                groups.setdefault((need, j, c, d), []).append((state.finish[pred][j], rb))
    compute = _compute_rows(layer.flops, h, tuple(profile.devices[i].rate(layer.op) for i in act))
    if not groups:
        return free + compute, np.zeros((len(act), h + 1, h + 1))
    ov = np.array([_overlap(need, c, d) for need, _, c, d in groups])  # [g, a, b]
    has = ov > 0
    total = np.array([sum(rb for _, rb in lines) for lines in groups.values()])
    receivers = act.tolist()
    remote = np.array([[float(j != i) for i in receivers] for _, j, _, _ in groups])  # [g, i]
    received = np.einsum("gab,gi->iab", ov * total[:, None, None], remote)
    lat, per_byte = links
    g_of, starts, wire, rbs = [], [], [], []
    for g, ((_, j, _, _), lines) in enumerate(groups.items()):
        for t, rb in (lines if len(lines) == 1 else _envelope(lines)):
            g_of.append(g)
            starts.append([t + lat[j, i] if rb > 0 else t + 0.0 for i in receivers])  # no bytes: no message, no latency
            wire.append([per_byte[j, i] for i in receivers])
            rbs.append(rb)
    if len(g_of) == len(groups):  # one line per group (the usual case): no gather
        ov_l, has_l = ov, has
    else:
        ov_l, has_l = ov[g_of], has[g_of]
    arrival = np.array(starts)[:, :, None, None] + np.array(wire)[:, :, None, None] * \
        (ov_l * np.array(rbs)[:, None, None])[:, None]  # [line, i, a, b]
    arrival = np.where(has_l[:, None], arrival, -math.inf).max(axis=0)
    return np.maximum(free, arrival) + compute, received


@functools.lru_cache(maxsize=1024)
def _compute_rows(flops: float, h: int, rates: tuple[float, ...]) -> np.ndarray:
    """Compute seconds of range [a, b) on each device of ``rates``, [i, a, b] (read-only: made once per layer shape)."""
    per_row = np.array([flops / h / rate for rate in rates])
    out = _rows(h)[None] * per_row[:, None, None]
    out.flags.writeable = False
    return out


def _envelope(lines: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (start, bytes per row) lines not dominated by another both no earlier and no lighter.

    Latest first: a line is dominated exactly when a different one before it is at least as
    heavy (O(L log L); a concat's group has a line per input).
    """
    kept: list[tuple[float, float]] = []
    heaviest = -math.inf  # over the distinct lines before the current run of equal ones
    run: tuple[float, float] | None = None
    run_heaviest = -math.inf
    for line in sorted(lines, reverse=True):
        if line != run:
            heaviest, run = max(heaviest, run_heaviest), line
            run_heaviest = line[1]
        if line[1] > heaviest:
            kept.append(line)
    return kept


@functools.lru_cache(maxsize=64)
def _rows(h: int) -> np.ndarray:
    """rows[a, b] = b - a, the rows of range [a, b) (read-only: made once per height)."""
    rows = np.arange(h + 1)[None, :] - np.arange(h + 1)[:, None]
    rows.flags.writeable = False
    return rows


def _lookahead(graph: LayerGraph, layer: Layer, ahead: Placement, profile: Profile, h: int,
               links: tuple[np.ndarray, np.ndarray], act: np.ndarray) -> np.ndarray:
    """Per device ``act[i]``: how much later than its finish the readers' units it feeds can finish, [i, a, b].

    With the readers' splits fixed (``ahead``, the previous sweep's plan), device i's rows
    [a, b) reach reader device r at T_i + link_{i,r}(overlap bytes), and that unit ends
    its compute after that; the latest of these terms depends on (a, b) alone, so the
    recursion stays a chain. Their other inputs and queueing are left out.
    """
    lat, per_byte = links[0][act], links[1][act]
    extra = np.zeros((len(act), h + 1, h + 1))
    terms = dict.fromkeys(  # many reader units alike (concats of one split): each once, the max is the same
        (r, *input_rows(reader, k, rows), compute_seconds(reader, rows[1] - rows[0], profile.devices[r].rate(reader.op)))
        for reader, k in readers(graph, layer)
        for r, rows in enumerate(ahead.get(reader.name, [])) if rows[0] < rows[1])
    if not terms:
        return extra
    r, lo, hi, comp = (np.array(col) for col in zip(*terms))  # one row per (reader unit): all at once
    rows_of = _identity_need(h)
    ov = np.array([_overlap(rows_of, a, b) for _, a, b, _ in terms])  # [m, a, b]: my rows [a, b) it reads
    has = ov > 0
    delay = comp[:, None, None, None] + lat[:, r].T[:, :, None, None] + \
        per_byte[:, r].T[:, :, None, None] * (ov * row_bytes(layer))[:, None]  # [m, i, a, b]
    np.maximum(extra, np.where(has[:, None], delay, 0.0).max(axis=0), out=extra)
    return extra


@functools.lru_cache(maxsize=64)
def _identity_need(h: int) -> tuple[bytes, bytes]:
    """The :func:`_overlap` key of output rows [a, b) themselves (a reader's rows met by a range of mine)."""
    pos = np.arange(h + 1)
    return pos.tobytes(), pos.tobytes()


def dp_split(graph: LayerGraph, layer: Layer, placement: Placement, state: State, profile: Profile,
             caps: list[int], ahead: Placement | None = None,
             links: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[int], float] | None:
    """Rows per device minimising the layer's finish (ties: fewest bytes), and that finish; None if no split fits.

    With ``ahead`` (a plan of the layers after it), what is minimised is when the
    layer's readers can finish given their splits in ``ahead`` (see :func:`_lookahead`).
    ``links``: :func:`link_arrays` of the profile, when the caller solves many layers.
    """
    n, h = len(profile), extent(layer)
    rows = _rows(h)
    links = link_arrays(profile) if links is None else links
    act = np.array([i for i in range(n) if caps[i] > 0], dtype=int)  # devices with room
    if not len(act):
        return None
    costs, bytes_in = _device_costs(graph, layer, placement, state, profile, h, links, act)
    if ahead is not None:
        costs += _lookahead(graph, layer, ahead, profile, h, links, act)
    allowed = (rows[None] > 0) & (rows[None] <= np.asarray(caps)[act][:, None, None])
    finish = np.where(allowed, costs, math.inf)
    best = _chain_min_max(finish, h)
    if not math.isfinite(best):
        return None
    limit = best * (1 + TIE) if best > 0 else best
    counts = [0] * n
    for i, rows_i in zip(act.tolist(), _chain_min_bytes(finish, bytes_in, h, limit)):
        counts[i] = rows_i
    return counts, best


def _chain_min_max(finish: np.ndarray, h: int) -> float:
    """min over boundary chains of the slowest device's finish (the recursion in the module doc).

    ``finish``: [i, a, b] of the devices with room, in profile order.
    """
    d = np.full(h + 1, math.inf)
    d[0] = -math.inf  # no rows placed yet: nothing finishes
    for f in finish:
        via = np.maximum(d[:, None], f).min(axis=0)
        d = np.minimum(d, via)
    return float(d[h])


def _chain_min_bytes(finish: np.ndarray, received: np.ndarray, h: int, limit: float) -> list[int]:
    """Among chains with every device finishing by ``limit``: fewest bytes received; the rows of
    each device of ``finish``."""
    e = np.full(h + 1, math.inf)
    e[0] = 0.0
    cols = np.arange(h + 1)
    steps: list[tuple[np.ndarray, np.ndarray]] = []
    for ok, r in zip(finish <= limit, received):
        cost = np.where(ok, e[:, None] + r, math.inf)
        arg = cost.argmin(axis=0)
        via = cost[arg, cols]
        steps.append((arg, via < e))  # where taken: device i's range ending at b starts at arg[b]
        e = np.minimum(e, via)
    counts = [0] * len(steps)
    b = h
    for i in range(len(steps) - 1, -1, -1):
        arg, take = steps[i]
        a = int(arg[b]) if take[b] else b
        counts[i] = b - a
        b = a
    assert b == 0 and math.isfinite(e[h]), "the min-bytes chain must exist when the min-max one does"
    return counts
