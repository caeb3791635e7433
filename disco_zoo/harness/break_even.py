"""The link bandwidth at which DISCO starts to beat one dense device, from the model of time.

Why: a speed-up "vs dense within-layer parallelism" says nothing about whether splitting
pays at all; one device running the dense model needs no link. The break-even is the
bandwidth B at which the model of time (:func:`disco_zoo.timing.predict_latency`, the same
replay that predicts every measured link) puts DISCO's latency equal to one dense
device's measured latency. The replay's latency never grows with bandwidth (every
arrival time is a max of sums with non-negative 8·bytes/B terms), so bisection on
log B finds it; if DISCO is slower even over an unlimited link there is none.

Each emulated link is timed in a launch of its own, and its prediction was made from the
compute measured in that launch. A schema-3 result records that compute (the link's
:class:`~disco_zoo.harness.report.LinkPrograms`), and :func:`link_predicted_ms` replays it;
the section's programs (the localhost launch, beside the one-device latency the break-even
is measured against) can be minutes older, and on a shared machine its speed moves by tens
of percent over minutes.
"""
from __future__ import annotations

import dataclasses
import math

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.report import BreakEven, LatencyResult, LinkLatency
from disco_zoo.timing import ComputeProfile, Link, MessageCost, RankProgram, predict_latency

__all__ = ["LOWEST_BPS", "HIGHEST_BPS", "RUNS", "break_even_bandwidth", "recorded_profile", "recorded_message_cost",
           "predicted_ms", "break_even_of", "program_gaps", "with_gaps", "link_profile", "link_predicted_ms"]

RUNS = ("disco", "dense_tp")  # the recorded programs' runs

LOWEST_BPS = 1e3  # 1 kbit/s: below this no one runs an image model over a link
HIGHEST_BPS = 1e12  # 1 Tbit/s: the search's upper end (beyond it the link is "unlimited")


def break_even_bandwidth(profile: ComputeProfile, target_s: float, message_cost: MessageCost = MessageCost(),
                         latency_s: float = 0.0, rel_tol: float = 1e-4) -> float | None:
    """Lowest bandwidth (bits/s) at which ``profile`` over links of ``latency_s`` is
    predicted to finish within ``target_s``; ``None`` when it is slower even over an
    unlimited link, :data:`LOWEST_BPS` when it already is at that rate."""
    if not math.isfinite(target_s) or target_s <= 0:
        raise DiscoZooError(f"the break-even needs a positive target latency, got {target_s!r} s")

    def latency(bps: float | None) -> float:
        return predict_latency(profile, Link(bps, latency_s), message_cost)

    if latency(None) > target_s:
        return None
    if latency(LOWEST_BPS) <= target_s:
        return LOWEST_BPS
    lo, hi = math.log(LOWEST_BPS), math.log(HIGHEST_BPS)  # latency(e^lo) > target >= latency(e^hi) (or unlimited)
    if latency(HIGHEST_BPS) > target_s:
        return HIGHEST_BPS  # met only between 1 Tbit/s and unlimited: report the search's end
    while hi - lo > rel_tol:
        mid = 0.5 * (lo + hi)
        if latency(math.exp(mid)) <= target_s:
            hi = mid
        else:
            lo = mid
    return math.exp(hi)


def recorded_profile(latency: LatencyResult, run: str) -> ComputeProfile:
    """The programs a result recorded for ``run`` ('disco' or 'dense_tp')."""
    if run not in RUNS:
        raise DiscoZooError(f"no recorded programs for {run!r}; use one of {RUNS}")
    if latency.programs is None:
        raise DiscoZooError(f"this result at {latency.input_size}x{latency.input_size} records no programs "
                            "(schema 1); re-record it with `disco-zoo eval MODEL --out FILE`.")
    return ComputeProfile([RankProgram.from_dict(d) for d in getattr(latency.programs, run)])


def program_gaps(program: RankProgram, like: RankProgram | None = None) -> list[float]:
    """A program's compute gaps, one per event, then its tail: what a link records
    (:class:`~disco_zoo.harness.report.LinkPrograms`). With ``like``, the program must have
    ``like``'s events (kind, peer, tag, bytes), so that the gaps can be put back on them."""
    if like is not None and _structure(program) != _structure(like):
        raise DiscoZooError(f"rank {program.rank}'s messages differ from those of the section's programs "
                            f"({len(program.events)} events against {len(like.events)}); a link launch must run "
                            "the same model as the localhost launch")
    return [e.gap_s for e in program.events] + [program.tail_s]


def with_gaps(program: RankProgram, gaps: list[float]) -> RankProgram:
    """``program``'s events with ``gaps`` (one per event, then the tail) as their compute."""
    if len(gaps) != len(program.events) + 1:
        raise DiscoZooError(f"rank {program.rank}: {len(gaps)} recorded gaps for a program of {len(program.events)} "
                            f"events (expected one per event plus the tail, {len(program.events) + 1})")
    return RankProgram(program.rank, [dataclasses.replace(e, gap_s=float(g)) for e, g in zip(program.events, gaps)],
                       float(gaps[-1]))


def _structure(program: RankProgram) -> list[tuple]:
    return [(e.kind, e.peer, e.tag, e.nbytes) for e in program.events]


def link_profile(latency: LatencyResult, link: LinkLatency, run: str) -> ComputeProfile:
    """The programs ``link``'s own launch measured for ``run`` (schema 3); a result that
    records none for the link (schema 2) gives the section's programs."""
    section = recorded_profile(latency, run)
    if link.programs is None:
        return section
    gaps = getattr(link.programs, run)
    if len(gaps) != len(section.programs):
        raise DiscoZooError(f"the {link.bandwidth} link records gaps for {len(gaps)} ranks; the section's "
                            f"{run} programs have {len(section.programs)}")
    return ComputeProfile([with_gaps(p, g) for p, g in zip(section.programs, gaps)])


def link_predicted_ms(latency: LatencyResult, link: LinkLatency, run: str) -> float:
    """The model of time's latency (ms) of ``run`` over ``link``, from the compute its own
    launch measured (:func:`link_profile`) and the section's message cost."""
    return 1000.0 * predict_latency(link_profile(latency, link, run), Link(link.bandwidth_bps),
                                    recorded_message_cost(latency))


def recorded_message_cost(latency: LatencyResult) -> MessageCost:
    """The message cost measured in the same session as the result."""
    return MessageCost(latency.message_overhead_ms / 1000.0, latency.message_ms_per_mib / 1000.0 / 2**20,
                       latency.message_send_ms / 1000.0, latency.message_send_ms_per_mib / 1000.0 / 2**20)


def predicted_ms(latency: LatencyResult, run: str, bandwidth_bps: float | None) -> float:
    """The model of time's latency (ms) of ``run`` over links of ``bandwidth_bps`` (None: unlimited)."""
    return 1000.0 * predict_latency(recorded_profile(latency, run), Link(bandwidth_bps),
                                    recorded_message_cost(latency))


def break_even_of(latency: LatencyResult) -> BreakEven:
    """The break-even of a result's DISCO programs against its measured one-device latency."""
    profile, cost = recorded_profile(latency, "disco"), recorded_message_cost(latency)
    bps = break_even_bandwidth(profile, latency.dense_single_ms / 1000.0, cost)
    return BreakEven(dense_single_ms=latency.dense_single_ms,
                     disco_unlimited_predicted_ms=1000.0 * predict_latency(profile, Link(None), cost),
                     bandwidth_bps=bps)
