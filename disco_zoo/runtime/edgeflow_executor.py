"""Run an EdgeFlow plan across processes, one per device, on the session shell.

Every rank builds the same model (same seed), traces it, checks the plan against it
(the stored units must be the ones the model and placement give) and executes the
plan's *stored* units in topological order: for each of its units it receives the
input rows other devices hold (their forwarding tables send exactly those rows),
computes its output rows (:func:`disco_zoo.planner.rows.compute_unit`) and isends the
rows each successor unit needs. Receives happen in topological order and every send
is non-blocking, so no rank waits on a later layer: no deadlock.

Input, tags, the output rank and result merging come from
:mod:`disco_zoo.runtime.session` (the same shell as the DISCO executor); the prediction
is the model of time's replay of the same units (:mod:`disco_zoo.planner.simulate`).

Devices slower than this host are emulated by sleeping after each unit until its
profile's predicted compute time has passed; a device faster than the host's share of
a core cannot be emulated and is refused (``slowdown`` divides every profile rate).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph import LayerGraph, trace_model
from disco_zoo.planner.plan_io import Plan, check_plan, load_plan
from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.programs import message_tag
from disco_zoo.planner.rows import compute_unit
from disco_zoo.planner.simulate import simulate_units
from disco_zoo.planner.units import Unit, compute_seconds
from disco_zoo.registry import build_model
from disco_zoo.runtime.host_rate import host_rate_share
from disco_zoo.runtime.session import rank_report, run_entry, seeded_input, unique_tags
from disco_zoo.runtime.transport import Transport
from disco_zoo.runtime.wire import wait_until
from disco_zoo.timing.links import Link

__all__ = ["run_plan_rank", "execute_plan", "plan_tags", "plan_output_device", "slowed", "ideal_links",
           "EDGEFLOW_ENTRY"]

EDGEFLOW_ENTRY = "disco_zoo.runtime.edgeflow_executor:run_plan_rank"


def slowed(profile: Profile, slowdown: float) -> Profile:
    """The profile with every compute rate divided by ``slowdown``."""
    devices = [replace(d, flops=d.flops / slowdown, flops_by_op={k: v / slowdown for k, v in d.flops_by_op.items()})
               for d in profile.devices]
    return Profile(profile.name, devices, profile.default_link, dict(profile.pair_links), profile.basis)


def ideal_links(profile: Profile) -> Profile:
    """The profile with free links (what a run without link emulation should show)."""
    return Profile(profile.name, list(profile.devices), Link(), {}, profile.basis)


def plan_tags(units: list[Unit]) -> dict[tuple[str, str, int, int], str]:
    """The session's tag policy over a plan's messages: one tag per (from layer, to
    layer, src, dst), named ``from>to``, every one with its own backend id (a rank's
    receives follow the consumers' order, its peers' sends the producers', so two
    pending messages must never share an id)."""
    labels: dict[tuple[str, str, int, int], str] = {}
    for u in units:
        for f in u.forward:
            if f.device != u.device:
                labels.setdefault((u.layer, f.layer, u.device, f.device), message_tag(u.layer, f.layer))
    return unique_tags(labels)


def plan_output_device(graph: LayerGraph, units: list[Unit]) -> int:
    """The device holding the model output: the one computing the graph's output layer."""
    outputs = [l.name for l in graph if l.op == "output"]
    holders = [u.device for u in units if outputs and u.layer == outputs[-1]]
    if len(holders) != 1:
        raise DiscoZooError(f"the plan puts the model output on {len(holders)} devices; it needs exactly one")
    return holders[0]


def _model_graph(plan: Plan, seed: int) -> LayerGraph:
    """The traced model the plan was made for, with the run's seeded weights, checked against the plan."""
    torch.manual_seed(seed)
    graph = trace_model(build_model(plan.model, **plan.model_kwargs).eval(), plan.input_shape)
    check_plan(plan, graph)
    return graph


def _rows_of(t: torch.Tensor, rows: tuple[int, int], first: int) -> torch.Tensor:
    return t[:, :, rows[0] - first:rows[1] - first] if t.dim() == 4 else t


def run_plan_rank(transport: Transport, plan_path: str, seed: int = 0, stretch: bool = False,
                  slowdown: float = 1.0, warmup: int = 1, repeats: int = 3) -> dict[str, Any]:
    """Launch entry: this rank's stored units, ``warmup`` untimed then ``repeats`` timed
    inferences (the median is reported: a first inference pays torch's one-time kernel
    set-up, which no device profile models); the output device returns the output."""
    plan, _ = load_plan(plan_path)
    if len(plan.profile) != transport.world_size:
        raise DiscoZooError(f"plan has {len(plan.profile)} devices but {transport.world_size} ranks were started")
    graph = _model_graph(plan, seed)
    units = plan.units or []
    profile = slowed(plan.profile, slowdown)
    me = transport.rank
    tags = plan_tags(units)
    mine = {u.layer: u for u in units if u.device == me}
    x = seeded_input(plan.input_shape, seed)

    def _infer() -> tuple[Any, float, float, float]:
        """One inference: (output or None, latency, compute seconds, overrun seconds)."""
        held: dict[str, tuple[torch.Tensor, int]] = {}
        sends, result, compute_s, overrun_s = [], None, 0.0, 0.0
        transport.barrier()
        transport.counter.reset()
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
                        wait_until(time.monotonic() + want - spent)  # a plain sleep wakes late, per unit
                    compute_s += max(spent, want) if stretch else spent
                    overrun_s += max(0.0, spent - want) if stretch else 0.0
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
        return result, latency, compute_s, overrun_s

    runs = [_infer() for _ in range(warmup + max(1, repeats))][warmup:]
    transport.barrier()
    pick = sorted(range(len(runs)), key=lambda i: runs[i][1])[len(runs) // 2]  # the median inference
    result, latency, compute_s, overrun_s = runs[pick]
    return rank_report(transport, plan_output_device(graph, units), result, latency_s=latency, compute_s=compute_s,
                       overrun_s=overrun_s, latencies_s=[r[1] for r in runs], units=len(mine))


def _refuse_unemulatable(profile: Profile, n: int) -> float:
    """This host's rate per rank; raises if a device of ``profile`` is faster (stretching cannot speed up)."""
    host = host_rate_share(n)
    fast = [d for d in profile.devices if max([d.flops, *d.flops_by_op.values()]) > host]
    if fast:
        names = ", ".join(f"{d.name} ({d.flops / 1e9:.1f} GFLOP/s)" for d in fast)
        raise DiscoZooError(
            f"cannot emulate {names}: faster than this host's share of a core ({host / 1e9:.1f} GFLOP/s "
            f"per rank for {n} ranks). Pass a slowdown of at least "
            f"{max(d.flops for d in fast) / host:.1f} (--slowdown) or run without --stretch.")
    return host


def execute_plan(plan_path: str, *, backend: str = "mpi", seed: int = 0, stretch: bool = True,
                 slowdown: float = 1.0, emulate_links: bool = False, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the plan's stored units on one process per device; measured vs predicted latency and bytes."""
    plan, _ = load_plan(plan_path)
    graph = _model_graph(plan, seed)  # fail here, with one clear message, not in every rank
    units = plan.units or []
    n = len(plan.profile)
    profile = slowed(plan.profile, slowdown)
    host = _refuse_unemulatable(profile, n) if stretch else None
    link = plan.profile.links() if emulate_links else None  # rank i is device i
    run = run_entry(EDGEFLOW_ENTRY, n, backend,
                    args={"plan_path": str(plan_path), "seed": seed, "stretch": stretch, "slowdown": slowdown},
                    timeout_s=timeout_s, link=link, wall_timeout_s=timeout_s * 3)
    rounds = [max(r["latencies_s"][i] for r in run.per_rank) for i in range(len(run.per_rank[0]["latencies_s"]))]
    run_profile = profile if emulate_links else ideal_links(profile)
    predicted = simulate_units(graph, units, run_profile)  # its compute is only what a run shows when stretched
    return {
        "model": plan.model,
        "devices": [d.name for d in plan.profile.devices],
        "measured_latency_s": statistics.median(rounds),
        "rounds_s": rounds,
        "predicted_latency_s": simulate_units(graph, units, profile).latency_s,
        "predicted_this_run_s": predicted.latency_s,
        "bytes_measured": run.bytes_total,
        "bytes_predicted": predicted.bytes_total,
        "per_rank": [{k: r[k] for k in ("rank", "latency_s", "compute_s", "overrun_s", "units")} for r in run.per_rank],
        "output_rank": run.output_rank,
        "logits": run.output.tolist(),
        "host_rate_share": host,
        "links_emulated": emulate_links,
    }
