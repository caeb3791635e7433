"""The model cards' figures: latency against link bandwidth, and accuracy against traffic.

Why a module of its own: what a figure shows is computed by small data functions
(:func:`latency_curves`, :func:`read_frontier`) that tests compare with the recorded
numbers, and drawing them is a thin layer over matplotlib's object API (no pyplot, no
global backend: a :class:`~matplotlib.figure.Figure` renders through Agg). Every curve of
latency comes from the one model of time (:func:`disco_zoo.harness.break_even.predicted_ms`)
replaying the programs a result recorded; the points over it are the measured runs.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.break_even import predicted_ms
from disco_zoo.harness.intervals import correct_count, wilson_interval
from disco_zoo.harness.report import EvalReport, LatencyResult
from disco_zoo.hub import REPO_HUB

__all__ = ["PLOTS_DIR", "FRONTIER_DIR", "LinkPoint", "LatencyCurves", "FrontierPoint", "Frontier", "latency_curves",
           "latency_plot_name", "frontier_plot_name", "read_frontier", "frontier_files", "plot_latency", "plot_frontier",
           "write_plots"]

ROOT = REPO_HUB.parent
PLOTS_DIR = ROOT / "eval" / "plots"
FRONTIER_DIR = ROOT / "eval" / "frontier"
DPI = 100
CURVE_POINTS = 61


@dataclass(frozen=True)
class LinkPoint:
    """One timed link: measured medians, and the model of time's prediction recorded with them."""

    bandwidth_bps: float
    disco_ms: float
    dense_tp_ms: float
    disco_predicted_ms: float
    dense_tp_predicted_ms: float


@dataclass(frozen=True)
class LatencyCurves:
    """One input size: the model of time's latency (ms) at each bandwidth, and what was measured."""

    input_size: int
    bandwidth_bps: list[float]
    disco_ms: list[float]  # predicted
    dense_tp_ms: list[float]  # predicted
    dense_single_ms: float  # measured, one dense device (no link)
    measured: list[LinkPoint]  # each emulated link the result timed
    break_even_bps: float | None


def latency_curves(latency: LatencyResult, points: int = CURVE_POINTS) -> LatencyCurves:
    """The curves of one recorded latency section, over a log grid spanning its links (x10 each side)."""
    links = [link.bandwidth_bps for link in latency.links]
    if not links:
        raise DiscoZooError(f"the result at {latency.input_size}x{latency.input_size} timed no emulated link; "
                            "re-record it with `disco-zoo eval MODEL --bandwidth 10mbit,100mbit,1gbit`.")
    lo, hi = math.log10(min(links) / 10), math.log10(max(links) * 10)
    grid = [10 ** (lo + (hi - lo) * i / (points - 1)) for i in range(points)]
    return LatencyCurves(
        input_size=latency.input_size,
        bandwidth_bps=grid,
        disco_ms=[predicted_ms(latency, "disco", b) for b in grid],
        dense_tp_ms=[predicted_ms(latency, "dense_tp", b) for b in grid],
        dense_single_ms=latency.dense_single_ms,
        measured=[LinkPoint(link.bandwidth_bps, link.disco_ms, link.dense_tp_ms, link.disco_predicted_ms,
                            link.dense_tp_predicted_ms) for link in latency.links],
        break_even_bps=latency.break_even.bandwidth_bps if latency.break_even else None,
    )


@dataclass(frozen=True)
class FrontierPoint:
    budget: float
    traffic_ratio: float  # DISCO bytes / dense TP bytes
    top1: float
    top1_low: float  # 95% Wilson interval
    top1_high: float
    flops_ratio: float
    max_node_params_ratio: float
    folder: str


@dataclass(frozen=True)
class Frontier:
    """``eval/frontier/<arch>.json``: one sparsified model per traffic budget, with the dense reference."""

    arch: str
    dense_model: str
    dense_top1: float
    n_test: int
    points: list[FrontierPoint]


_POINT_KEYS = ("budget", "traffic_ratio", "top1", "flops_ratio", "max_node_params_ratio", "folder")


def read_frontier(path: Path) -> Frontier:
    """A frontier file, checked key by key (a missing key names the file and the key)."""
    try:
        doc: Any = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DiscoZooError(f"{path} is not a readable frontier file ({err})") from None
    for key in ("arch", "dense_model", "dense_top1", "n_test", "points"):
        if not isinstance(doc, dict) or key not in doc:
            raise DiscoZooError(f"{path} lacks the key {key!r} (see eval/frontier/README or the cards brief's schema)")
    n = int(doc["n_test"])
    points = []
    for i, raw in enumerate(doc["points"]):
        missing = [k for k in _POINT_KEYS if k not in raw]
        if missing:
            raise DiscoZooError(f"{path}: points[{i}] lacks the keys {missing}")
        low, high = wilson_interval(correct_count(float(raw["top1"]), n), n)
        points.append(FrontierPoint(float(raw["budget"]), float(raw["traffic_ratio"]), float(raw["top1"]), low, high,
                                    float(raw["flops_ratio"]), float(raw["max_node_params_ratio"]), str(raw["folder"])))
    points.sort(key=lambda p: -p.traffic_ratio)
    return Frontier(str(doc["arch"]), str(doc["dense_model"]), float(doc["dense_top1"]), n, points)


def latency_plot_name(model: str) -> str:
    return f"{model}.latency.png"


def frontier_plot_name(arch: str) -> str:
    return f"{arch}.frontier.png"


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    """PNG written atomically, without the matplotlib version in it (reproducible bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    tmp.replace(path)
    return path


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.3g} Mbit/s"


def plot_latency(report: EvalReport, path: Path) -> Path:
    """Latency against bandwidth (log-log) at each recorded input size: the model of time's
    curves for DISCO and dense TP, one dense device's measured latency, measured points."""
    sections = [lat for lat in (report.latency, report.latency_paper_size) if lat is not None]
    fig = _figure(4.2 * len(sections), 3.4)
    axes = fig.subplots(1, len(sections), squeeze=False)[0]
    for ax, lat in zip(axes, sections):
        c = latency_curves(lat)
        x = [b / 1e6 for b in c.bandwidth_bps]
        ax.plot(x, c.disco_ms, color="C0", label="DISCO, cost model")
        ax.plot(x, c.dense_tp_ms, color="C1", label="dense TP, cost model")
        ax.axhline(c.dense_single_ms, color="C2", linestyle="--", label="one dense device, measured")
        at = [m.bandwidth_bps / 1e6 for m in c.measured]
        ax.plot(at, [m.disco_ms for m in c.measured], "o", color="C0", label="DISCO, measured")
        ax.plot(at, [m.dense_tp_ms for m in c.measured], "s", color="C1", label="dense TP, measured")
        ax.plot(at + at, [m.disco_predicted_ms for m in c.measured] + [m.dense_tp_predicted_ms for m in c.measured],
                "x", color="k", markersize=5, label="cost model, as recorded in the run")
        if c.break_even_bps is not None:
            ax.axvline(c.break_even_bps / 1e6, color="0.5", linestyle=":",
                       label=f"break-even {_mbit(c.break_even_bps)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("link bandwidth (Mbit/s)")
        ax.set_ylabel("latency, batch 1 (ms)")
        ax.set_title(f"{report.model}\n{c.input_size}x{c.input_size}, {report.nodes} nodes", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6.5)
    return _save(fig, path)


def plot_frontier(frontier: Frontier, path: Path) -> Path:
    """Top-1 (95% Wilson bars) against traffic reduction vs dense TP (log), with the dense
    model's top-1 and the line one point below it."""
    dense_low, dense_high = wilson_interval(correct_count(frontier.dense_top1, frontier.n_test), frontier.n_test)
    fig = _figure(5.0, 3.6)
    ax = fig.subplots()
    x = [1.0 / p.traffic_ratio for p in frontier.points]
    y = [100 * p.top1 for p in frontier.points]
    yerr = [[100 * (p.top1 - p.top1_low) for p in frontier.points], [100 * (p.top1_high - p.top1) for p in frontier.points]]
    ax.errorbar(x, y, yerr=yerr, fmt="o-", color="C0", capsize=3, label="DISCO (95% Wilson interval)")
    for p, xi, yi in zip(frontier.points, x, y):
        ax.annotate(f"budget {p.budget:g}", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=6.5)
    ax.axhspan(100 * dense_low, 100 * dense_high, color="C2", alpha=0.12, label="dense, 95% interval")
    ax.axhline(100 * frontier.dense_top1, color="C2", linestyle="--", label=f"dense {frontier.dense_model}")
    ax.axhline(100 * frontier.dense_top1 - 1.0, color="C3", linestyle=":", label="dense - 1 pt")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    times = FuncFormatter(lambda value, _: f"{value:g}x")
    ax.xaxis.set_major_formatter(times)
    ax.xaxis.set_minor_formatter(times)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("traffic reduction vs dense TP (log)")
    ax.set_ylabel(f"top-1 on {frontier.n_test} test images (%)")
    ax.set_title(f"{frontier.arch}: accuracy against traffic", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def frontier_files(frontier_dir: Path = FRONTIER_DIR) -> list[Path]:
    return sorted(frontier_dir.glob("*.json")) if frontier_dir.is_dir() else []


def write_plots(results: dict[str, EvalReport], plots_dir: Path = PLOTS_DIR, frontier_dir: Path = FRONTIER_DIR,
                say: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Every figure the cards embed; a result without programs (schema 1) or no frontier
    files is skipped with a message, not an error."""
    written = []
    for name, report in sorted(results.items()):
        sections = [lat for lat in (report.latency, report.latency_paper_size) if lat is not None]
        if not sections or any(lat.programs is None for lat in sections):
            say(f"skipped {name}: its result records no programs for the model of time (re-record it)")
            continue
        written.append(plot_latency(report, plots_dir / latency_plot_name(name)))
    files = frontier_files(frontier_dir)
    if not files:
        say(f"skipped the accuracy-against-traffic plots: no {frontier_dir}/*.json yet")
    for path in files:
        frontier = read_frontier(path)
        written.append(plot_frontier(frontier, plots_dir / frontier_plot_name(frontier.arch)))
    return written
