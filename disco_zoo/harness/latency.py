"""Latency: interleaved timing rounds on localhost and through emulated links, as ratios.

Every figure is measured batch-1, one thread per process: DISCO and dense within-layer
parallelism (TP, the same executor with every cross-node channel kept) on N ranks,
against the dense model in one process. Each launch interleaves its measurements
round by round (:mod:`disco_zoo.runtime.rounds`); every ratio is the median of
per-round ratios, and every link's prediction comes from the model of time
(:mod:`disco_zoo.timing.replay`) fed with compute measured in the same launch, and that
compute is recorded with the link (schema 3), so the prediction can be replayed later.
"""
from __future__ import annotations

import copy
import dataclasses
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from disco_zoo.disco.adapters import apply_partition, get_partition
from disco_zoo.disco.shards import save_shards
from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.break_even import break_even_of, program_gaps
from disco_zoo.harness.options import EvalOptions
from disco_zoo.harness.report import (
    CostModelPrograms, LatencyResult, LinkLatency, LinkPrograms, LinkRoundCounts, LinkRounds, LocalRounds,
)
from disco_zoo.harness.runs import run_rounds
from disco_zoo.hub import get_pretrained_cfg, is_model_path, load
from disco_zoo.registry import build_model, split_name
from disco_zoo.runtime.calibrate import measure_message_cost
from disco_zoo.runtime.disco_executor import current_rss_bytes
from disco_zoo.store import load_folder_config
from disco_zoo.timing.links import Link
from disco_zoo.timing.replay import ComputeProfile, MessageCost, RankProgram, median_program, predict_latency

__all__ = ["LINK_BUDGET_S", "measure_latencies", "dense_tp_copy", "load_dense_measured"]

LINK_BUDGET_S = 8.0  # a link measurement expected to take longer than this gets the few rounds asked for

Progress = Callable[[str], None]


def _median_ms(values: Sequence[float]) -> float:
    return 1000.0 * statistics.median(values)


def _ms(values: Sequence[float]) -> list[float]:
    return [1000.0 * v for v in values]


def _warm_imports(name: str) -> None:
    """Build the architecture on the meta device (no memory) so that measuring RSS around
    loading counts the weights, not the first import of the model's code."""
    arch = get_pretrained_cfg(name).arch if is_model_path(name) else split_name(name)[0]
    with torch.device("meta"):
        build_model(arch)


def load_dense_measured(name: str) -> tuple[torch.nn.Module, int]:
    """(the dense pretrained model, by name or folder; RSS growth of this process while
    loading it): the baseline a rank's shard loading is compared with."""
    _warm_imports(name)
    rss = current_rss_bytes()
    model = load(name)
    return model.eval(), current_rss_bytes() - rss


def dense_tp_copy(model: torch.nn.Module, folder: Path, out: Path) -> Path:
    """The same weights with every cross-node channel kept: dense within-layer parallelism."""
    dense_tp = copy.deepcopy(model)
    apply_partition(dense_tp, get_partition(model).with_all_open())
    config = load_folder_config(folder)
    return save_shards(dense_tp, out, extra={"arch": config.arch, "args": dict(config.args)})


def _per_round_max(results: list[dict[str, Any]], key: str) -> list[float]:
    """Per round, the slowest rank's seconds: an inference ends when every rank has."""
    return [max(values) for values in zip(*(r[key] for r in results))]


def _profile(results: list[dict[str, Any]]) -> ComputeProfile:
    """The model of time's input from one launch: each rank's median concurrent program."""
    return ComputeProfile([median_program([RankProgram.from_dict(d) for d in r["programs"]]) for r in results])


def _per_round_predictions(results: list[dict[str, Any]], link: Link, message_cost: MessageCost) -> list[float]:
    """Per measured round, the model of time's seconds from that round's own concurrent
    programs. Why per round: an event-wise median program drops every gap's occasional
    slow instance, so the sum of its gaps (2-4% below a typical round's, measured on
    ResNet-50) predicts no round that actually ran."""
    return [predict_latency(ComputeProfile([RankProgram.from_dict(p) for p in programs]), link, message_cost)
            for programs in zip(*(r["programs"] for r in results))]


def _median_round_gaps(results: list[dict[str, Any]], predictions: list[float],
                       like: ComputeProfile) -> list[list[float]]:
    """The ranks' programs of the link launch's median round (the round whose prediction is
    the median, the lower one of an even count), as compute gaps on the events of ``like``
    (the localhost launch's programs of the same run). Why that round's, not an event-wise
    median: a round that ran, so replaying it gives back the prediction recorded for it; on
    a loaded machine each round has a stall or two at a different event, which the
    event-wise median drops (EDSR at 24x24 over 1 Gbit/s: 29 ms against the median round's 78)."""
    index = sorted(range(len(predictions)), key=predictions.__getitem__)[(len(predictions) - 1) // 2]
    return [program_gaps(RankProgram.from_dict(r["programs"][index]), q) for r, q in zip(results, like.programs)]


def _link_latency(bandwidth: str, folder: Path, dense_tp_folder: Path, nodes: int, shape: list[int],
                  opts: EvalOptions, local_profiles: dict[str, ComputeProfile], message_cost: MessageCost,
                  dense_single_ms: float, link_warmup: int, link_repeats: int) -> LinkLatency:
    link = Link.parse(bandwidth)
    if link.bandwidth_bps is None:
        raise DiscoZooError(f"--bandwidth {bandwidth!r}: an emulated link needs a finite bandwidth (e.g. 100mbit)")
    rounds = {}
    for which, profile in local_profiles.items():
        # a link run that is quick (by the localhost profile's prediction) gets as many
        # rounds as localhost; a slow one (seconds per inference) link_repeats
        expected_s = predict_latency(profile, link, message_cost) * (opts.warmup + opts.repeats)
        rounds[which] = (opts.repeats, opts.warmup) if expected_s <= LINK_BUDGET_S else (link_repeats, link_warmup)
    disco = run_rounds(folder, nodes, shape, opts, *rounds["disco"], link=link)
    tp = run_rounds(dense_tp_folder, nodes, shape, opts, *rounds["tp"], link=link)
    real_disco, real_tp = _per_round_max(disco, "real_s"), _per_round_max(tp, "real_s")
    predicted_disco = _per_round_predictions(disco, link, message_cost)
    predicted_tp = _per_round_predictions(tp, link, message_cost)
    return LinkLatency(
        bandwidth=bandwidth,
        bandwidth_bps=float(link.bandwidth_bps),
        rounds=LinkRoundCounts(disco=rounds["disco"][0], dense_tp=rounds["tp"][0]),
        disco_ms=_median_ms(real_disco),
        dense_tp_ms=_median_ms(real_tp),
        disco_predicted_ms=_median_ms(predicted_disco),
        dense_tp_predicted_ms=_median_ms(predicted_tp),
        disco_measured_over_predicted=statistics.median(r / p for r, p in zip(real_disco, predicted_disco)),
        dense_tp_measured_over_predicted=statistics.median(r / p for r, p in zip(real_tp, predicted_tp)),
        speedup_vs_dense_single=dense_single_ms / _median_ms(real_disco),
        speedup_vs_dense_tp=_median_ms(real_tp) / _median_ms(real_disco),
        per_round=LinkRounds(disco_ms=_ms(real_disco), disco_predicted_ms=_ms(predicted_disco),
                             dense_tp_ms=_ms(real_tp), dense_tp_predicted_ms=_ms(predicted_tp)),
        # the compute the predictions above were made from, measured in this link's launch
        programs=LinkPrograms(source="measured: the ranks' concurrent programs of this link launch's median round",
                              disco=_median_round_gaps(disco, predicted_disco, local_profiles["disco"]),
                              dense_tp=_median_round_gaps(tp, predicted_tp, local_profiles["tp"])),
    )


def measure_latencies(folder: Path, dense_tp_folder: Path, dense: str, nodes: int, shape: Sequence[int],
                      opts: EvalOptions, progress: Progress, link_warmup: int, link_repeats: int,
                      dense_rss_load_growth_bytes: int | None = None) -> LatencyResult:
    """Batch-1 latency of one input ``shape`` (1, C, H, W), all measured, one thread per
    process: DISCO and dense TP on ``nodes`` ranks, on localhost and through each of
    ``opts.bandwidths``, against ``dense`` (a model name) in one process.

    On localhost each launch interleaves the dense model, each rank's compute alone
    (solo, and all ranks at once) and the real inference; on every link the ranks'
    concurrent compute and the real inference, so the prediction for that link is made
    from compute measured seconds, not minutes, from the run it predicts. A link whose
    runs are quick gets the localhost rounds; a slow one ``link_warmup`` + ``link_repeats``.
    """
    shape = list(shape)
    size = shape[-1]
    progress(f"latency on localhost at {size}x{size}: dense, compute alone and DISCO, interleaved")
    local = run_rounds(folder, nodes, shape, opts, opts.repeats, opts.warmup, dense=dense, solo=True)
    local_tp = run_rounds(dense_tp_folder, nodes, shape, opts, opts.repeats, opts.warmup)
    real, solo = _per_round_max(local, "real_s"), _per_round_max(local, "solo_s")
    concurrent, dense_s = _per_round_max(local, "concurrent_s"), local[0]["dense_s"]
    message_cost = measure_message_cost(opts.backend, emulated=True)
    local_profiles = {"disco": _profile(local), "tp": _profile(local_tp)}
    dense_single_ms = _median_ms(dense_s)
    links = []
    for bandwidth in opts.bandwidths:
        progress(f"emulated link {bandwidth} at {size}x{size}")
        links.append(_link_latency(bandwidth, folder, dense_tp_folder, nodes, shape, opts, local_profiles,
                                   message_cost, dense_single_ms, link_warmup, link_repeats))
    result = LatencyResult(
        input_size=size,
        rounds=opts.repeats,
        dense_single_ms=dense_single_ms,
        disco_localhost_ms=_median_ms(real),
        dense_tp_localhost_ms=_median_ms(_per_round_max(local_tp, "real_s")),
        per_rank_ms=[_median_ms(r["real_s"]) for r in local],
        compute_alone_ms=[_median_ms(r["solo_s"]) for r in local],
        compute_concurrent_ms=[_median_ms(r["concurrent_s"]) for r in local],
        message_overhead_ms=1000.0 * message_cost.fixed_s,
        message_ms_per_mib=1000.0 * message_cost.per_byte_s * 2**20,
        message_send_ms=1000.0 * message_cost.send_fixed_s,  # the sender's own time per message
        message_send_ms_per_mib=1000.0 * message_cost.send_per_byte_s * 2**20,
        rank_peak_rss_kb=[r["maxrss_kb"] for r in local],
        rank_rss_load_growth_bytes=[r["rss_load_growth_bytes"] for r in local],
        rank_weight_bytes=[r["weight_bytes"] for r in local],
        dense_weight_bytes=local[0]["dense_weight_bytes"],
        speedup_localhost_vs_dense=statistics.median(d / r for d, r in zip(dense_s, real)),
        localhost_over_compute_alone=statistics.median(r / c for r, c in zip(real, solo)),
        localhost_over_compute_concurrent=statistics.median(r / c for r, c in zip(real, concurrent)),
        # why a speed-up falls short: dense over the slowest rank's solo compute is the
        # ceiling with idle cores; ranks computing at once slow each other by the penalty
        speedup_ceiling_compute_alone=statistics.median(d / c for d, c in zip(dense_s, solo)),
        concurrency_penalty=statistics.median(c / a for c, a in zip(concurrent, solo)),
        per_round=LocalRounds(dense_ms=_ms(dense_s), disco_ms=_ms(real), compute_alone_ms=_ms(solo),
                              compute_concurrent_ms=_ms(concurrent)),
        links=links,
        dense_rss_load_growth_bytes=dense_rss_load_growth_bytes,
        programs=CostModelPrograms(
            source="measured: each rank's median concurrent program of the localhost launch",
            disco=[p.to_dict() for p in local_profiles["disco"].programs],
            dense_tp=[p.to_dict() for p in local_profiles["tp"].programs]),
    )
    # the break-even is read off the programs just recorded, by the same model of time
    return dataclasses.replace(result, break_even=break_even_of(result))
