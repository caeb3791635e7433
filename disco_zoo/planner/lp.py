"""EdgeFlow's greedy sweep: layers placed one at a time in topological order, and the old per-layer LP.

:func:`plan_layers` places each layer given the ones before it: copying layers take their
input's split, whole layers the device that finishes them first, and a splittable layer
the split that minimises its finish, found exactly by :mod:`disco_zoo.planner.boundary_dp`
(``solver="dp"``, the default) or, on the old path kept for the benchmark and the
brute-force test (``solver="lp"``), by successive HiGHS LPs: devices take contiguous row
ranges in profile order; the LP chooses the row counts x_i, linearising the halo overlaps
around a point (trust region), the relaxed solution is rounded by largest remainder and
repaired by local moves of the range boundaries, and every candidate is scored with the
per-layer cost (:func:`disco_zoo.planner.layer_cost.layer_timing`, links not contending).
The whole-model search around the sweep is :mod:`disco_zoo.planner.search`;
:func:`plan_edgeflow_lp` is the old one (the LP sweep per device subset, the lowest
replayed latency wins). docs/edgeflow.md writes the formulations out; docs/time-model.md
the model of time.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import Layer, LayerGraph
from disco_zoo.planner.boundary_dp import TIE, copies_split, dp_split, link_arrays
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.layer_cost import State, commit, layer_timing
from disco_zoo.planner.simulate import simulate
from disco_zoo.planner.units import Placement, Range, _window, compute_seconds, extent, row_bytes, splittable


@dataclass
class PlanStats:
    lp_solves: int = 0
    lp_seconds: float = 0.0
    plan_seconds: float = 0.0
    plan_cpu_seconds: float = 0.0
    layers_lp: int = 0  # layers that needed a split solved (LP or DP)
    dp_solves: int = 0
    passes: int = 0  # look-ahead improvement passes
    subsets_pruned: int = 0
    restaged: int = 0  # stage re-splits of a baseline tried
    replays_skipped: int = 0  # candidates a lower bound ruled out without a replay
    sweeps_stopped: int = 0  # greedy sweeps or passes given up part-way: their lower bound reached the best
    origin: str = ""  # which candidate won, e.g. "greedy on a+b" or "baseline proportional-split"
    is_baseline: bool = False  # the plan is a baseline's, unchanged


@dataclass
class _Ctx:
    graph: LayerGraph
    profile: Profile
    placement: Placement
    state: State
    held: list[float]
    stats: PlanStats = field(default_factory=PlanStats)
    links: tuple[np.ndarray, np.ndarray] | None = None  # the DP's link arrays, made once per plan


def ranges_from_counts(counts: list[int]) -> list[Range]:
    out, pos = [], 0
    for c in counts:
        out.append((pos, pos + c))
        pos += c
    return out


def round_counts(x: np.ndarray, total: int) -> list[int]:
    """Largest-remainder rounding of non-negative shares to integers summing to ``total``."""
    x = np.clip(np.asarray(x, dtype=float), 0, None)
    x = x * (total / x.sum()) if x.sum() > 0 else np.full(len(x), total / len(x))
    base = np.floor(x + 1e-9).astype(int)
    order = np.argsort(-(x - base), kind="stable")
    for k in range(total - int(base.sum())):
        base[order[k % len(x)]] += 1
    return [int(v) for v in base]


@dataclass(frozen=True)
class Room:
    """What one layer needs in memory whatever its split: :func:`memory_caps`' per-layer terms."""

    rows: int
    weights: float
    whole: bool  # one device holds all of it
    per_row: float  # bytes per output row: its rows and the input rows they read
    whole_bytes: float


def layer_room(graph: LayerGraph, layer: Layer) -> Room:
    """The split-independent terms of ``layer``'s memory need (see :func:`memory_caps`)."""
    whole = not splittable(layer)
    win = _window(layer) if layer.op in ("conv", "pool") and not whole else None
    stride = win[1] if win else 1
    per_row = row_bytes(layer) + sum(row_bytes(graph[p]) * stride for p in layer.predecessors)
    whole_bytes = layer.output_bytes + sum(graph[p].output_bytes for p in layer.predecessors)
    return Room(extent(layer), layer.params * graph.dtype_bytes, whole, per_row, whole_bytes)


def room_caps(room: Room, held: list[float], profile: Profile) -> list[int]:
    """Most rows each device can hold of a layer of ``room``, with ``held`` bytes of weights already there."""
    return [_room_cap(room, dev.memory_bytes - held[i] - room.weights) for i, dev in enumerate(profile.devices)]


def _room_cap(room: Room, avail: float) -> int:
    """Most rows of a layer of ``room`` that ``avail`` bytes (after its weights) hold."""
    if avail < 0 or (room.whole and avail < room.whole_bytes):
        return 0
    if room.whole or room.per_row <= 0 or math.isinf(avail):
        return room.rows
    return int(min(room.rows, avail // room.per_row))


def memory_caps(graph: LayerGraph, layer: Layer, held: list[float], profile: Profile) -> list[int]:
    """Most rows each device can hold: the layer's weights plus its input and output rows."""
    return room_caps(layer_room(graph, layer), held, profile)


def memory_rooms(graph: LayerGraph) -> dict[str, Room]:
    """:func:`layer_room` of every layer: made once when many placements of one graph are checked."""
    return {layer.name: layer_room(graph, layer) for layer in graph}


def fits_memory(graph: LayerGraph, placement: Placement, profile: Profile,
                rooms: dict[str, Room] | None = None, known: int = 0) -> bool:
    """Does every device have room for its rows of every layer, by :func:`memory_caps`' accounting?

    ``rooms``: :func:`memory_rooms` of the graph, when the caller checks many placements.
    ``known``: how many leading layers (graph order) are known to fit, e.g. where the
    placement agrees with one that fits: only their weights are counted (what a layer
    needs depends on its own split and the weights before it alone).
    """
    rooms = memory_rooms(graph) if rooms is None else rooms
    held = [0.0] * len(profile)
    memory = [d.memory_bytes for d in profile.devices]
    for index, layer in enumerate(graph):
        room = rooms[layer.name]
        pinned = layer.op in ("input", "output") or index < known
        for i, (a, b) in enumerate(placement[layer.name]):
            c = b - a
            if c > 0:  # no rows always fit; the caps of devices with rows only (the search checks every candidate)
                if not pinned and c > _room_cap(room, memory[i] - held[i] - room.weights):
                    return False
                held[i] += room.weights
            elif c < 0 and not pinned:
                return False
    return True


def _score(ctx: _Ctx, layer: Layer, ranges: list[Range]) -> tuple[float, float, float]:
    """(finish bucket, bytes received, finish): near-equal finishes prefer less traffic.

    Bytes a device receives before the layer's bottleneck finishes are free in the
    per-layer model, but they mean misaligned splits that cost the layers after it.
    """
    t = layer_timing(ctx.graph, layer, ranges, ctx.placement, ctx.state, ctx.profile)
    bucket = math.floor(math.log(t.done) / math.log1p(TIE)) if t.done > 0 else -math.inf
    return (bucket, sum(t.bytes_in), t.done)


def _feasible(counts: list[int], caps: list[int]) -> bool:
    return all(0 <= c <= cap for c, cap in zip(counts, caps))


def _repair(ctx: _Ctx, layer: Layer, counts: list[int], caps: list[int]) -> tuple[list[int], tuple[float, float]]:
    """Local search: move range boundaries by 1, 2, 4, ... rows while the exact cost drops."""
    h = sum(counts)
    best = list(counts)
    best_cost = _score(ctx, layer, ranges_from_counts(best)) if _feasible(best, caps) else (math.inf, math.inf, math.inf)
    for _ in range(100):
        improved = False
        bounds = list(itertools.accumulate(best))[:-1]
        for b in range(len(bounds)):
            step = 1
            while step <= h:
                for move in (step, -step):
                    nb = list(bounds)
                    nb[b] = min(h, max(0, nb[b] + move))
                    if any(nb[k] > nb[k + 1] for k in range(len(nb) - 1)) or nb == bounds:
                        continue
                    cand = [e - s for s, e in zip([0] + nb, nb + [h])]
                    if not _feasible(cand, caps):
                        continue
                    cost = _score(ctx, layer, ranges_from_counts(cand))
                    if cost < best_cost:
                        best, best_cost, improved = cand, cost, True
                        bounds = nb
                step *= 2
        if not improved:
            break
    return best, best_cost


def _pieces(layer: Layer, k: int) -> tuple[int, int, int, bool]:
    """(stride, offset of the first needed row, window span, whole) for predecessor k."""
    win = _window(layer) if layer.op in ("conv", "pool") else None
    if win is not None:
        kernel, stride, pad, dil = win
        return stride, -pad, dil * (kernel - 1) + 1, False
    shape = layer.input_shapes[k]
    h_in = int(shape[2]) if len(shape) == 4 else 1
    return 1, 0, 1, h_in != extent(layer)


def solve_lp(ctx: _Ctx, layer: Layer, point: np.ndarray, caps: list[int], radius: float) -> np.ndarray | None:
    """One LP around ``point`` (row shares); returns the relaxed shares or None if infeasible.

    Variables: x_0..x_{n-1} (rows), T (layer finish), q (rows received per active
    (device, predecessor, sender) triple). Devices with no rows at ``point`` stay at 0.
    """
    graph, prof, n, h = ctx.graph, ctx.profile, len(ctx.profile), extent(layer)
    b0 = np.concatenate([[0.0], np.cumsum(point)])  # b0[i] = start of device i, b0[i+1] = end
    comp = [compute_seconds(layer, 1, prof.devices[i].rate(layer.op)) for i in range(n)]
    rows_a, rhs, q_meta = [], [], []

    def bound_coef(idx: int) -> np.ndarray:  # coefficient vector of boundary b_idx = sum_{t<idx} x_t
        c = np.zeros(n)
        c[:idx] = 1.0
        return c

    active = [i for i in range(n) if point[i] > 1e-9]
    cons: list[tuple[np.ndarray, float, int | None, float]] = []  # (x coefs, const, q index, q coef)
    for i in active:
        cx = np.zeros(n)
        cx[i] = comp[i]
        cons.append((cx, ctx.state.free[i], None, 0.0))
        for k, pred in enumerate(layer.predecessors):
            stride, off, span, whole = _pieces(layer, k)
            h_in = int(layer.input_shapes[k][2]) if len(layer.input_shapes[k]) == 4 else 1
            # needed rows [lo, hi): lo = s*b_i + off, hi = s*(b_{i+1} - 1) + off + span, clipped to [0, h_in]
            if whole:
                lo_c, lo_k, hi_c, hi_k = np.zeros(n), 0.0, np.zeros(n), float(h_in)
            else:
                lo_c, lo_k = stride * bound_coef(i), float(off)
                hi_c, hi_k = stride * bound_coef(i + 1), float(off + span - stride)
            lo0, hi0 = lo_c @ point + lo_k, hi_c @ point + hi_k
            rb = row_bytes(graph[pred])
            for j, (c, d) in enumerate(ctx.placement[pred]):
                c, d = max(c, 0), min(d, h_in)
                if min(hi0, d) - max(lo0, c) <= 1e-9 or d <= c:
                    continue
                t_pred = ctx.state.finish[pred][j]
                if j == i:
                    cons.append((cx, t_pred, None, 0.0))
                    continue
                # q >= min(hi, d) - max(lo, c), each min/max taken on the piece active at the point
                qc = (hi_c if hi0 < d else np.zeros(n)) - (lo_c if lo0 > c else np.zeros(n))
                qk = (hi_k if hi0 < d else d) - (lo_k if lo0 > c else c)
                q_meta.append((qc, qk))
                link = prof.link(j, i)
                cons.append((cx, t_pred + link.latency_s, len(q_meta) - 1, rb * 8.0 / link.bandwidth_bps))
    nq = len(q_meta)
    nv = n + 1 + nq
    for cx, const, qi, qcoef in cons:  # const + cx.x + qcoef*q - T <= 0
        row = np.zeros(nv)
        row[:n] = cx
        row[n] = -1.0
        if qi is not None:
            row[n + 1 + qi] = qcoef
        rows_a.append(row)
        rhs.append(-const)
    for qi, (qc, qk) in enumerate(q_meta):  # qc.x + qk - q <= 0
        row = np.zeros(nv)
        row[:n] = qc
        row[n + 1 + qi] = -1.0
        rows_a.append(row)
        rhs.append(-qk)
    for idx in range(1, n):  # trust region on the boundaries
        row = np.zeros(nv)
        row[:n] = bound_coef(idx)
        rows_a.append(row)
        rhs.append(b0[idx] + radius)
        rows_a.append(-row)
        rhs.append(-(b0[idx] - radius))
    a_eq = np.zeros((1, nv))
    a_eq[0, :n] = 1.0
    bounds = [(0.0, float(caps[i]) if point[i] > 1e-9 else 0.0) for i in range(n)]
    bounds += [(None, None)] + [(0.0, None)] * nq
    cost = np.zeros(nv)
    cost[n] = 1.0
    for _, _, qi, qcoef in cons:
        if qi is not None:
            cost[n + 1 + qi] = TIE * qcoef  # among near-equal finishes, less traffic
    t0 = time.perf_counter()
    res = linprog(cost, A_ub=np.array(rows_a), b_ub=np.array(rhs), A_eq=a_eq, b_eq=[float(h)],
                  bounds=bounds, method="highs")
    ctx.stats.lp_seconds += time.perf_counter() - t0
    ctx.stats.lp_solves += 1
    return res.x[:n] if res.status == 0 else None


def _split_layer(ctx: _Ctx, layer: Layer, caps: list[int]) -> list[int]:
    """Best integer row counts found from several LP starting points."""
    n, h = len(ctx.profile), extent(layer)
    rates = np.array([d.rate(layer.op) for d in ctx.profile.devices])
    starts: list[np.ndarray] = []
    full = np.array([float(c > 0) for c in caps])
    starts.append(full * rates)
    for drop in range(n):
        s = full * rates
        s[drop] = 0
        if s.sum() > 0 and n > 2:
            starts.append(s)
    first = layer.predecessors[0]
    if extent(ctx.graph[first]) == h:
        starts.append(np.array([float(e - s) for s, e in ctx.placement[first]]))
    best, best_cost = None, (math.inf, math.inf, math.inf)
    for i in range(n):  # one device alone: the LP's corner cases, scored directly
        if caps[i] >= h:
            cand = [h if k == i else 0 for k in range(n)]
            cost = _score(ctx, layer, ranges_from_counts(cand))
            if cost < best_cost:
                best, best_cost = cand, cost
    for start in starts:
        if start.sum() <= 0:
            continue
        point = np.minimum(start * (h / start.sum()), np.array(caps, dtype=float))
        if point.sum() < h - 1e-6:
            point = np.array(caps, dtype=float) * (start > 0)
            if point.sum() < h - 1e-6:
                continue
            point *= h / point.sum()
        radius = float(h)
        for _ in range(4):
            x = solve_lp(ctx, layer, point, caps, radius)
            if x is None:
                break
            counts = round_counts(x, h)
            counts = _clip_to_caps(counts, caps)
            if counts is None:
                break
            counts, cost = _repair(ctx, layer, counts, caps)
            if cost < best_cost:
                best, best_cost = counts, cost
            if np.allclose(x, point, atol=1e-6):
                break
            point, radius = x, max(1.0, radius / 2)
    if best is None:
        raise DiscoZooError(_memory_message(ctx, layer, caps))
    return best


def _dp_layer(ctx: _Ctx, layer: Layer, caps: list[int], ahead: Placement | None) -> list[int]:
    t0 = time.perf_counter()
    if ctx.links is None:
        ctx.links = link_arrays(ctx.profile)
    found = dp_split(ctx.graph, layer, ctx.placement, ctx.state, ctx.profile, caps, ahead, ctx.links)
    ctx.stats.lp_seconds += time.perf_counter() - t0
    ctx.stats.dp_solves += 1
    if found is None:
        raise DiscoZooError(_memory_message(ctx, layer, caps))
    return found[0]


def _clip_to_caps(counts: list[int], caps: list[int]) -> list[int] | None:
    """Move rows that exceed a device's memory cap to devices with room."""
    counts = list(counts)
    extra = sum(max(0, c - cap) for c, cap in zip(counts, caps))
    counts = [min(c, cap) for c, cap in zip(counts, caps)]
    for i in range(len(counts)):
        take = min(extra, caps[i] - counts[i])
        counts[i] += take
        extra -= take
    return None if extra else counts


def _memory_message(ctx: _Ctx, layer: Layer, caps: list[int]) -> str:
    names = ", ".join(f"{d.name} ({c} rows)" for d, c in zip(ctx.profile.devices, caps))
    return (f"no placement of layer {layer.name!r} fits in memory: it has {extent(layer)} rows and "
            f"{layer.params * ctx.graph.dtype_bytes} weight bytes, the devices have room for {names}. "
            "Add a device, give devices more memory_bytes, or use a smaller --input-size.")


def _whole_device(ctx: _Ctx, layer: Layer, caps: list[int], pinned: int | None) -> int:
    h = extent(layer)
    options = [pinned] if pinned is not None else [i for i in range(len(ctx.profile)) if caps[i] >= h]
    if pinned is not None and caps[pinned] < h:
        options = []
    if not options:
        raise DiscoZooError(_memory_message(ctx, layer, caps))
    return min(options, key=lambda i: _score(ctx, layer, ranges_from_counts([h if k == i else 0
                                                                             for k in range(len(ctx.profile))])))


def plan_layers(graph: LayerGraph, profile: Profile, allowed: set[int] | None = None,
                stats: PlanStats | None = None, solver: str = "dp", ahead: Placement | None = None) -> Placement:
    """Greedy per-layer placement over the ``allowed`` devices (all by default).

    ``solver`` splits a layer: "dp", the exact integer optimum of the per-layer cost
    (:mod:`disco_zoo.planner.boundary_dp`), or "lp", the successive HiGHS LPs with
    rounding and repair (the old path, kept for the benchmark and the brute-force test).
    ``ahead`` (dp only): a plan whose splits of the later layers each layer looks ahead to
    (the improvement pass, :mod:`disco_zoo.planner.search`). The input starts and the
    output ends on device 0 whatever ``allowed`` says.
    """
    placement = plan_layers_until(graph, profile, math.inf, allowed, stats, solver, ahead)
    assert placement is not None  # no finish reaches inf
    return placement


def plan_layers_until(graph: LayerGraph, profile: Profile, stop_at: float, allowed: set[int] | None = None,
                      stats: PlanStats | None = None, solver: str = "dp", ahead: Placement | None = None,
                      rooms: dict[str, Room] | None = None) -> Placement | None:
    """:func:`plan_layers`, given up (None) once a committed layer finishes at ``stop_at`` or later.

    Why: the per-layer cost (:mod:`disco_zoo.planner.layer_cost`) is a lower bound of the
    replay, and the finishes only grow layer by layer, so a plan under way whose finish
    has reached the best candidate's latency cannot beat it; the search stops it early.
    "Reached" is :func:`finish_bound`: the FLOPs still to place must be computed too.
    ``rooms``: :func:`memory_rooms` of the graph, when the caller plans it many times.
    """
    n = len(profile)
    ctx = _Ctx(graph, profile, {}, State(free=[0.0] * n), [0.0] * n, stats or PlanStats())
    able = set(range(n)) if allowed is None else allowed | {0}  # device 0 holds the input and the output
    rates = [max([d.flops, *d.flops_by_op.values()]) if i in able else 0.0 for i, d in enumerate(profile.devices)]
    left = sum(layer.flops for layer in graph)
    for layer in graph:
        left -= layer.flops
        caps = room_caps(rooms[layer.name] if rooms is not None else layer_room(graph, layer), ctx.held, profile)
        if allowed is not None and layer.op not in ("input", "output"):
            caps = [c if i in allowed else 0 for i, c in enumerate(caps)]
        h = extent(layer)
        counts: list[int] | None = None
        if layer.op in ("input", "output"):
            dev = _whole_device(ctx, layer, caps, pinned=0) if layer.op == "output" else 0
            counts = [h if k == dev else 0 for k in range(n)]
        elif not splittable(layer):
            dev = _whole_device(ctx, layer, caps, pinned=None)
            counts = [h if k == dev else 0 for k in range(n)]
        elif copies_split(graph, layer):
            counts = [e - s for s, e in ctx.placement[layer.predecessors[0]]]
            if not _feasible(counts, caps):
                counts = None
        if counts is None and sum(c > 0 for c in caps) == 1 and max(caps) >= h:
            counts = [h if c > 0 else 0 for c in caps]  # one device can take it: nothing to solve
        if counts is None:
            ctx.stats.layers_lp += 1
            counts = _split_layer(ctx, layer, caps) if solver == "lp" else _dp_layer(ctx, layer, caps, ahead)
        ranges = ranges_from_counts(counts)
        ctx.placement[layer.name] = ranges
        commit(ctx.state, layer, layer_timing(graph, layer, ranges, ctx.placement, ctx.state, profile))
        if finish_bound(ctx.state.free, rates, left) >= stop_at:
            return None
        for i, c in enumerate(counts):
            if c > 0:
                ctx.held[i] += layer.params * graph.dtype_bytes
    return ctx.placement


def finish_bound(free: list[float], rates: list[float], flops: float) -> float:
    """A lower bound of a plan's last finish, given when each device is free and ``flops`` still to compute.

    No device finishes before it is free, and the rest takes at least the time every
    device (``rates``: its best FLOP/s, 0 for one that takes no more work) computing
    from its free time on needs for it: the per-layer cost starts a unit no earlier.
    """
    last = max(free)
    flops -= sum((last - f) * r for f, r in zip(free, rates))
    return last if flops <= 0 else last + flops / sum(rates)


def device_subsets(profile: Profile) -> list[set[int]]:
    """Device sets to plan over: all of them for n <= 3, else the k fastest for k = 1..n."""
    n = len(profile)
    if n <= 3:
        return [set(c) for k in range(1, n + 1) for c in itertools.combinations(range(n), k)]
    by_rate = sorted(range(n), key=lambda i: -profile.devices[i].rate("conv"))
    return [set(by_rate[:k]) for k in range(1, n + 1)]


def plan_edgeflow_lp(graph: LayerGraph, profile: Profile) -> tuple[Placement, PlanStats]:
    """The old EdgeFlow path (kept for the benchmark): the per-layer LP over each device subset,
    the lowest simulated latency wins; :func:`disco_zoo.planner.search.plan_edgeflow` replaced it.

    The per-layer objective is myopic (a split that finishes this layer sooner can cost
    traffic later), so leaving devices out entirely is searched as a whole-model choice.
    """
    stats = PlanStats()
    t0 = time.perf_counter()
    best, best_latency, full_error = None, math.inf, None
    for allowed in device_subsets(profile):
        try:
            placement = plan_layers(graph, profile, allowed, stats, solver="lp")
        except DiscoZooError as err:
            if len(allowed) == len(profile):
                full_error = err  # names every device's room, the clearest message
            continue
        latency = simulate(graph, placement, profile).latency_s
        if latency < best_latency:
            best, best_latency = placement, latency
    stats.plan_seconds = time.perf_counter() - t0
    if best is None:
        raise full_error
    return best, stats


def brute_force_counts(graph: LayerGraph, layer: Layer, placement: Placement, state: State,
                       profile: Profile, caps: list[int] | None = None) -> tuple[list[int], float]:
    """Exhaustive integer optimum of one layer's split under the same cost model (tests)."""
    n, h = len(profile), extent(layer)
    caps = caps or [h] * n
    ctx = _Ctx(graph, profile, placement, state, [0.0] * n)
    best, best_cost = None, math.inf
    for cuts in itertools.combinations_with_replacement(range(h + 1), n - 1):
        counts = [e - s for s, e in zip((0,) + cuts, cuts + (h,))]
        if _feasible(counts, caps):
            cost = _score(ctx, layer, ranges_from_counts(counts))[2]
            if cost < best_cost:
                best, best_cost = counts, cost
    return best, best_cost


def split_layer(graph: LayerGraph, layer: Layer, placement: Placement, state: State, profile: Profile,
                caps: list[int] | None = None) -> tuple[list[int], float]:
    """The LP planner's rows per device for one splittable layer, and its finish time."""
    ctx = _Ctx(graph, profile, placement, state, [0.0] * len(profile))
    caps = caps or [extent(layer)] * len(profile)
    counts = _split_layer(ctx, layer, caps)
    return counts, _score(ctx, layer, ranges_from_counts(counts))[2]
