"""Add the model of time's programs and the break-even to eval results recorded before schema 2.

Why: a schema-1 result records each link's measured and predicted latency but not the
rank programs the prediction replayed, so no other bandwidth (a plot's curve, the
break-even) can be predicted from it. Re-recording means minutes of timed runs on a quiet
machine; this rebuilds the programs instead, and says so in ``programs.source``:

* the event structure (every message's peer, tag and bytes) is exact: it comes from the
  model's own runtime code over the null backend (``profile_compute``), as in a run;
* the compute gaps are profiled here (on whatever this machine is doing now), then every
  gap of a run (DISCO, dense TP) is scaled by one factor, fitted so that the rebuilt
  programs reproduce the result's recorded link predictions (least squares on log ratios,
  one parameter against every recorded link);
* the worst remaining deviation from a recorded prediction is written into ``source``
  and must be under ``--tolerance``.

Usage (repo root, venv active): ``python tools/backfill_programs.py [eval/results/X.json ...]``
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from disco_zoo.harness.break_even import break_even_of, predicted_ms
from disco_zoo.harness.latency import dense_tp_copy
from disco_zoo.harness.report import CostModelPrograms, EvalReport, LatencyResult
from disco_zoo.hub import load_folder, resolve_folder
from disco_zoo.runtime.profiling import profile_compute
from disco_zoo.timing import ComputeProfile, RankProgram

RESULTS = Path(__file__).resolve().parent.parent / "eval" / "results"


def _scaled(program: RankProgram, factor: float) -> RankProgram:
    return RankProgram(program.rank, [dataclasses.replace(e, gap_s=e.gap_s * factor) for e in program.events],
                       program.tail_s * factor)


def _programs(profile: ComputeProfile, factor: float) -> list[dict]:
    return [_scaled(p, factor).to_dict() for p in profile.programs]


def _fit(latency: LatencyResult, run: str, profile: ComputeProfile) -> tuple[list[dict], float]:
    """(programs scaled by the fitted factor, worst |predicted / recorded - 1| over the links)."""
    import math

    from scipy.optimize import minimize_scalar

    recorded = [(link.bandwidth_bps, getattr(link, f"{run}_predicted_ms")) for link in latency.links]

    def ratios(factor: float) -> list[float]:
        draft = CostModelPrograms(**{"source": "", "disco": [], "dense_tp": [], run: _programs(profile, factor)})
        lat = dataclasses.replace(latency, programs=draft)
        return [predicted_ms(lat, run, bps) / ms for bps, ms in recorded]

    fit = minimize_scalar(lambda log_f: sum(math.log(r) ** 2 for r in ratios(math.exp(log_f))),
                          bounds=(math.log(0.1), math.log(10.0)), method="bounded")
    factor = math.exp(fit.x)
    return _programs(profile, factor), max(abs(r - 1.0) for r in ratios(factor))


def _rebuilt(latency: LatencyResult, folder: Path, tp_folder: Path, channels: int) -> tuple[LatencyResult, float]:
    shape = [1, channels, latency.input_size, latency.input_size]
    disco, disco_worst = _fit(latency, "disco", profile_compute(folder, shape))
    tp, tp_worst = _fit(latency, "dense_tp", profile_compute(tp_folder, shape))
    worst = max(disco_worst, tp_worst)
    source = ("rebuilt after recording (tools/backfill_programs.py): message structure from the model's runtime "
              "code, compute gaps profiled later and scaled by one factor per run fitted to the recorded link "
              f"predictions; reproduces them within {disco_worst:.1%} (DISCO) and {tp_worst:.1%} (dense TP)")
    rebuilt = dataclasses.replace(latency, programs=CostModelPrograms(source=source, disco=disco, dense_tp=tp))
    return dataclasses.replace(rebuilt, break_even=break_even_of(rebuilt)), worst


def backfill(path: Path, tolerance: float) -> None:
    report = EvalReport.read(path)
    sections = {key: getattr(report, key) for key in ("latency", "latency_paper_size")}
    todo = {key: lat for key, lat in sections.items() if lat is not None and lat.programs is None}
    if not todo:
        print(f"{path}: nothing to add")
        return
    folder = resolve_folder(report.model)
    channels = load_folder(folder).pretrained_cfg.input_size[0]
    updates = {}
    with tempfile.TemporaryDirectory(prefix="disco-zoo-backfill-") as tmp:
        tp_folder = dense_tp_copy(load_folder(folder), folder, Path(tmp) / "dense_tp")
        for key, latency in todo.items():
            updates[key], worst = _rebuilt(latency, folder, tp_folder, channels)
            print(f"{path.name} {key} ({latency.input_size}px): worst deviation from the recorded predictions {worst:.1%}")
            if worst > tolerance:
                raise SystemExit(f"{path}: rebuilt programs miss the recorded predictions by {worst:.1%} "
                                 f"(> {tolerance:.0%}); re-record this result with `disco-zoo eval` instead.")
    dataclasses.replace(report, **updates).write(path)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--tolerance", type=float, default=0.15)
    args = parser.parse_args(argv)
    for path in args.paths or sorted(RESULTS.glob("*.json")):
        backfill(path, args.tolerance)


if __name__ == "__main__":
    main(sys.argv[1:])
