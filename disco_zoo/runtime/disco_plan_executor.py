"""Run a DISCO plan with the real executor on emulated devices; measured vs predicted.

Each node runs as one rank of the ordinary DISCO executor, its compute stretched to its
device by :class:`~disco_zoo.runtime.pacing.PacedTransport` (the gaps of the program the
planner derives for that device, :mod:`disco_zoo.planner.disco_programs`), and each pair
of ranks over its own device pair's link when links are emulated. The prediction is the
same programs replayed over the same links (ideal links when they are not emulated), so
the two agree exactly when the executor does what the plan says.
"""
from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from disco_zoo.errors import DiscoZooError
from disco_zoo.planner.disco_plan import disco_facts
from disco_zoo.planner.disco_plan_file import load_disco_plan, partition_fingerprint
from disco_zoo.planner.disco_programs import disco_programs
from disco_zoo.runtime.host_rate import host_rate_share
from disco_zoo.runtime.session import run_entry
from disco_zoo.timing.replay import predict_latency

__all__ = ["execute_disco_plan", "PACED_ENTRY"]

PACED_ENTRY = "disco_zoo.runtime.pacing:run_disco_paced"


def execute_disco_plan(plan_path: str, *, backend: str = "mpi", slowdown: float = 1.0, emulate_links: bool = False,
                       repeats: int = 3, warmup: int = 1, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run the plan at ``plan_path`` (see module doc) and compare with its prediction."""
    from disco_zoo.hub import load_folder, resolve_folder

    plan = load_disco_plan(plan_path)
    folder = resolve_folder(plan.model)
    facts = disco_facts(load_folder(folder), plan.model, plan.input_shape)
    if partition_fingerprint(facts.partition) != plan.partition_sha256:
        raise DiscoZooError(f"{plan_path} was made for another partition of {plan.model} (its fingerprint differs); "
                            f"make the plan again with `disco-zoo plan {plan.model} --out {plan_path}`")
    n = facts.partition.nodes
    if len(plan.devices) != n:
        raise DiscoZooError(f"{plan_path} places {len(plan.devices)} nodes but {plan.model} has {n}")
    devices = [replace(plan.profile.devices[d], flops=plan.profile.devices[d].flops / slowdown) for d in plan.devices]
    host = host_rate_share(n)
    fast = [d for d in devices if d.flops > host]
    if fast:
        raise DiscoZooError(f"cannot emulate {', '.join(d.name for d in fast)}: faster than this host's share of a core "
                            f"({host / 1e9:.1f} GFLOP/s per rank). Pass --slowdown of at least "
                            f"{max(d.flops for d in fast) * slowdown / host:.1f}.")
    programs = disco_programs(facts.partition, facts.shapes, facts.flops_per_entry, [d.flops for d in devices],
                              facts.input_shape, grouped_flops=facts.grouped_flops)
    links = {(a, b): plan.profile.link(plan.devices[a], plan.devices[b]) for a in range(n) for b in range(n) if a != b}
    run = run_entry(PACED_ENTRY, n, backend, timeout_s=timeout_s, wall_timeout_s=timeout_s * 3,
                    link=links if emulate_links else None,
                    args={"folder": str(folder), "input_shape": list(facts.input_shape),
                          "gaps": [[e.gap_s for e in p.events] for p in programs.programs],
                          "tails": [p.tail_s for p in programs.programs], "repeats": repeats, "warmup": warmup})
    per_round = [max(r["times_s"][i] for r in run.per_rank) for i in range(repeats)]
    measured = statistics.median(per_round)
    predicted = predict_latency(programs, links if emulate_links else None)
    return {
        "model": plan.model, "devices": [d.name for d in devices], "slowdown": slowdown,
        "links_emulated": emulate_links, "measured_latency_s": measured, "rounds_s": per_round,
        "predicted_this_run_s": predicted, "measured_over_predicted": measured / predicted,
        "bytes_measured": run.bytes_total, "bytes_predicted": sum(programs.bytes_per_pair.values()),
        "host_rate_share": host,
        "overrun_s": max(statistics.median(r["overrun_s"]) for r in run.per_rank),
    }
