"""Run an EdgeFlow plan across processes, one per device, over disco_zoo.runtime.

Every rank builds the same model (same seed), traces it, checks the plan against it
and walks the layers in topological order: for each of its units it receives the
input rows other devices hold (their forwarding tables send exactly those rows),
computes its output rows (:func:`disco_zoo.planner.rows.compute_unit`) and isends
the rows each successor unit needs. Receives happen in topological order and every
send is non-blocking, so no rank waits on a later layer: no deadlock.

Devices slower than this host are emulated by sleeping after each unit until its
profile's predicted compute time has passed; a device faster than the host's share of
a core cannot be emulated and is refused (``slowdown`` divides every profile rate).
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.plan_io import check_plan, load_plan
from disco_zoo.planner.profiles import Link, Profile
from disco_zoo.planner.rows import compute_unit
from disco_zoo.planner.simulate import compute_seconds, simulate
from disco_zoo.planner.units import Unit, build_units


def slowed(profile: Profile, slowdown: float) -> Profile:
    """The profile with every compute rate divided by ``slowdown``."""
    devices = [replace(d, flops=d.flops / slowdown, flops_by_op={k: v / slowdown for k, v in d.flops_by_op.items()})
               for d in profile.devices]
    return Profile(profile.name, devices, profile.default_link, dict(profile.pair_links), profile.basis)


def ideal_links(profile: Profile) -> Profile:
    """The profile with free links (what a run without link emulation should show)."""
    return Profile(profile.name, list(profile.devices), Link(float("inf"), 0.0), {}, profile.basis)


def message_tags(units: list[Unit]) -> dict[tuple[str, str, int, int], str]:
    """A string tag per (from layer, to layer, src, dst) whose integer id is unique in the plan.

    The transport hashes tags to MPI's small tag space; distinct messages that could be
    pending at once must never share an id, so colliding names get a salt.
    """
    from disco_zoo.runtime.transport import tag_id

    tags: dict[tuple[str, str, int, int], str] = {}
    used: set[int] = set()
    for u in units:
        for f in u.forward:
            key = (u.layer, f.layer, u.device, f.device)
            if f.device == u.device or key in tags:
                continue
            salt = 0
            while True:
                tag = f"{u.layer}>{f.layer}" + (f"#{salt}" if salt else "")
                if tag_id(tag) not in used:
                    break
                salt += 1
            used.add(tag_id(tag))
            tags[key] = tag
    return tags


def _rows_of(t: torch.Tensor, rows: tuple[int, int], first: int) -> torch.Tensor:
    return t[:, :, rows[0] - first:rows[1] - first] if t.dim() == 4 else t


def run_plan_rank(transport: Any, plan_path: str, seed: int = 0, stretch: bool = False,
                  slowdown: float = 1.0) -> dict[str, Any]:
    """Launch entry: this rank's units of one inference; rank 0 returns the logits."""
    from disco_zoo.graph import trace_model
    from disco_zoo.registry import create_model

    plan, _ = load_plan(plan_path)
    if len(plan.profile) != transport.world_size:
        raise DiscoZooError(f"plan has {len(plan.profile)} devices but {transport.world_size} ranks were started")
    torch.manual_seed(seed)
    net = create_model(plan.model, **plan.model_kwargs).eval()
    graph = trace_model(net, plan.input_shape)
    check_plan(plan, graph)
    profile = slowed(plan.profile, slowdown)
    me = transport.rank
    units = build_units(graph, plan.placement)
    tags = message_tags(units)
    mine = {u.layer: u for u in units if u.device == me}
    x = torch.randn(plan.input_shape, generator=torch.Generator().manual_seed(seed + 1))
    held: dict[str, tuple[torch.Tensor, int]] = {}
    sends, result, compute_s = [], None, 0.0
    transport.barrier()
    t0 = time.perf_counter()
    with torch.no_grad():
        for layer in graph:
            unit = mine.get(layer.name)
            if unit is None:
                continue
            if layer.op == "input":
                out = x
            else:
                inputs = []
                for req in unit.inputs:
                    pieces = []
                    for src in req.sources:
                        if src.device == me:
                            t, first = held[req.layer]
                            pieces.append(_rows_of(t, src.rows, first))
                        else:
                            shape = list(graph[req.layer].output_shape)
                            if len(shape) == 4:
                                shape[2] = src.rows[1] - src.rows[0]
                            tag = tags[(req.layer, layer.name, src.device, me)]
                            pieces.append(transport.recv(shape, torch.float32, src.device, tag))
                    t = torch.cat(pieces, dim=2) if pieces[0].dim() == 4 and len(pieces) > 1 else pieces[0]
                    inputs.append((t, req.rows[0] if t.dim() == 4 else 0))
                c0 = time.perf_counter()
                out = inputs[0][0] if layer.op == "output" else compute_unit(graph, layer, unit.rows, inputs)
                spent = time.perf_counter() - c0
                want = compute_seconds(layer, unit.rows[1] - unit.rows[0], profile.devices[me].rate(layer.op))
                if stretch and want > spent:
                    time.sleep(want - spent)
                compute_s += max(spent, want) if stretch else spent
            held[layer.name] = (out, unit.rows[0])
            if layer.op == "output":
                result = out
            for f in unit.forward:
                if f.device != me:
                    piece = _rows_of(out, f.rows, unit.rows[0])
                    sends.append(transport.isend(piece, f.device, tags[(layer.name, f.layer, me, f.device)]))
    latency = time.perf_counter() - t0
    for h in sends:
        h.wait()
    transport.barrier()
    report = {"rank": me, "latency_s": latency, "compute_s": compute_s, "units": len(mine),
              "bytes": transport.counter.to_dict()}
    if result is not None:
        report["logits"] = result.flatten().tolist()
    return report


def host_rate_share(world_size: int) -> float:
    """FLOP/s one rank can count on here: one thread's conv rate times its share of the cores."""
    from disco_zoo.commands.profile import measure_rates

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return measure_rates(repeats=2, threads=1)["conv"] * min(1.0, cores / world_size)


def execute_plan(plan_path: str, *, backend: str = "mpi", seed: int = 0, stretch: bool = True,
                 slowdown: float = 1.0, emulate_links: bool = False, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the plan on one process per device; measured vs predicted latency and bytes."""
    from disco_zoo.graph import trace_model
    from disco_zoo.registry import create_model
    from disco_zoo.runtime.launch import launch
    from disco_zoo.runtime.link import LinkProfile
    from disco_zoo.runtime.transport import ByteCounter

    plan, _ = load_plan(plan_path)
    torch.manual_seed(seed)
    graph = trace_model(create_model(plan.model, **plan.model_kwargs).eval(), plan.input_shape)
    check_plan(plan, graph)  # fail here, with one clear message, not in every rank
    n = len(plan.profile)
    profile = slowed(plan.profile, slowdown)
    host = None
    if stretch:
        host = host_rate_share(n)
        fast = [d for d in profile.devices if max([d.flops, *d.flops_by_op.values()]) > host]
        if fast:
            names = ", ".join(f"{d.name} ({d.flops / 1e9:.1f} GFLOP/s)" for d in fast)
            raise DiscoZooError(
                f"cannot emulate {names}: faster than this host's share of a core ({host / 1e9:.1f} GFLOP/s "
                f"per rank for {n} ranks). Pass a slowdown of at least "
                f"{max(d.flops for d in fast) / host:.1f} (--slowdown) or run without --stretch.")
    link = None
    if emulate_links:  # rank i is device i: every ordered pair gets its own profile link
        link = {(i, j): LinkProfile(plan.profile.link(i, j).bandwidth_bps, plan.profile.link(i, j).latency_s)
                for i in range(n) for j in range(n) if i != j}
    results = launch("disco_zoo.planner.executor:run_plan_rank", n, backend,
                     args={"plan_path": str(plan_path), "seed": seed, "stretch": stretch, "slowdown": slowdown},
                     timeout_s=timeout_s, link=link, wall_timeout_s=timeout_s * 3)
    merged = ByteCounter.merge([r["bytes"] for r in results])
    run_profile = profile if emulate_links else ideal_links(profile)
    predicted = simulate(graph, plan.placement, run_profile)  # compute only meaningful when stretched
    return {
        "model": plan.model,
        "devices": [d.name for d in plan.profile.devices],
        "measured_latency_s": max(r["latency_s"] for r in results),
        "predicted_latency_s": simulate(graph, plan.placement, profile).latency_s,
        "predicted_this_run_s": predicted.latency_s,
        "bytes_measured": sum(merged["pairs"].values()),
        "bytes_predicted": predicted.bytes_total,
        "per_rank": [{k: r[k] for k in ("rank", "latency_s", "compute_s", "units")} for r in results],
        "logits": next(r["logits"] for r in results if "logits" in r),
        "host_rate_share": host,
        "links_emulated": emulate_links,
    }
