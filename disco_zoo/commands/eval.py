"""``disco-zoo eval``: measure a pretrained DISCO model against its dense counterpart."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

if TYPE_CHECKING:
    from disco_zoo.harness.report import EvalReport, LatencyResult, TrafficFigures


def _break_even_text(report: EvalReport, latency: LatencyResult) -> str:
    from disco_zoo.card_facts import bandwidth_text, break_even_check, shared_cores

    check = break_even_check(latency, shared_cores(report.nodes, report.environment))
    if check is None:
        return "not recorded"
    if check.bandwidth_bps is None:
        return f"never (unlimited link: {check.disco_unlimited_predicted_ms:.1f} ms predicted)"
    agree = ("not checkable here: ranks shared cores" if check.shared_cores else "measured agrees")
    agree = agree if check.consistent else "measured disagrees at " + ", ".join(
        link.bandwidth for link in check.disagreeing)
    return f"{bandwidth_text(check.bandwidth_bps)} ({agree})"


def _print_report(report: EvalReport) -> None:
    from rich.console import Console
    from rich.table import Table

    from disco_zoo.tasks import find_metric

    console = Console(width=None if Console().is_terminal else 120)
    acc, at, paper = report.accuracy, report.at_input, report.at_paper_size  # paper: where the size is not fixed
    table = Table(title=f"{report.model} on {report.nodes} nodes vs {report.dense_model} ({report.dataset})")
    table.add_column("figure")
    table.add_column(f"at {at.input_size}x{at.input_size}", justify="right")
    if paper:
        table.add_column(f"at {paper.input_size}x{paper.input_size}", justify="right")

    def row(label: str, here: str, there: str = "") -> None:
        table.add_row(label, here, *([there] if paper else []))

    def both(fmt: Callable[[TrafficFigures], str]) -> tuple[str, str]:
        return fmt(at), fmt(paper) if paper else ""

    for name in acc.disco:
        metric = find_metric(name)
        row(f"{metric.label} DISCO (distributed) / dense",
            f"{metric.format(acc.disco[name])} / {metric.format(acc.dense[name])}", "-")
        if name in acc.floor:
            row(f"{metric.label} trivial floor (the task's baseline answer)", metric.format(acc.floor[name]), "-")
    row("bytes / inference, DISCO", *both(lambda d: f"{d.disco_bytes:,}"))
    row("bytes / inference, dense TP", *both(lambda d: f"{d.dense_tp_bytes:,}"))
    row("traffic reduction vs dense TP", *both(lambda d: f"{1 / d.traffic_ratio:.1f}x"))
    row("FLOPs", *both(lambda d: f"{d.flops_total / d.flops_dense:.2f} of dense; per node "
                                 + ", ".join(f"{f / d.flops_dense:.2f}" for f in d.flops_per_node)))
    row("params per node (of dense)", ", ".join(f"{p / at.params_dense:.2f}" for p in at.params_per_node), "")
    row("activation peak per node (KiB)", *both(lambda d: ", ".join(f"{a / 1024:.0f}" for a in d.act_peak_per_node)))
    lat, lat_paper = report.latency, report.latency_paper_size
    if lat:
        def timed(label: str, fmt: Callable[[LatencyResult], str]) -> None:
            row(label, fmt(lat), fmt(lat_paper) if lat_paper else "")

        timed("latency localhost: dense 1 proc / DISCO / dense TP (ms)",
              lambda d: f"{d.dense_single_ms:.1f} / {d.disco_localhost_ms:.1f} / {d.dense_tp_localhost_ms:.1f}")
        timed("speed-up localhost vs one dense device", lambda d: f"{d.speedup_localhost_vs_dense:.2f}x")
        timed("slowest rank's compute alone, no wire (ms)",
              lambda d: f"{max(d.compute_alone_ms):.1f} (localhost is {d.localhost_over_compute_alone:.2f}x of it)")
        timed("every rank's compute at once, no wire (ms)",
              lambda d: f"{max(d.compute_concurrent_ms):.1f} (localhost is {d.localhost_over_compute_concurrent:.2f}x of it)")
        timed("speed-up ceiling (dense / compute alone) / ranks at once vs alone",
              lambda d: f"{d.speedup_ceiling_compute_alone:.2f}x / {d.concurrency_penalty:.2f}x")
        for i, link in enumerate(lat.links):
            timed(f"@ {link.bandwidth}: DISCO / dense TP ms",
                  lambda d: f"{d.links[i].disco_ms:.0f} / {d.links[i].dense_tp_ms:.0f}")
            timed(f"@ {link.bandwidth}: speed-up vs dense TP | vs one dense device",
                  lambda d: f"{d.links[i].speedup_vs_dense_tp:.2f}x | {d.links[i].speedup_vs_dense_single:.2f}x")
            timed(f"@ {link.bandwidth}: cost model DISCO / dense TP ms",
                  lambda d: (f"{d.links[i].disco_predicted_ms:.0f} / {d.links[i].dense_tp_predicted_ms:.0f} "
                             f"(measured/predicted {d.links[i].disco_measured_over_predicted:.2f}, "
                             f"{d.links[i].dense_tp_measured_over_predicted:.2f})"))
        timed("break-even bandwidth vs one dense device (cost model)", lambda d: _break_even_text(report, d))
        row("peak RSS per rank (MiB)", ", ".join(f"{kb / 1024:.0f}" for kb in lat.rank_peak_rss_kb), "")
        if lat.dense_rss_load_growth_bytes is not None:
            dense_growth = max(lat.dense_rss_load_growth_bytes, 1)
            row("RSS growth loading: rank shard / dense model", ", ".join(
                f"{g / dense_growth:.2f}" for g in lat.rank_rss_load_growth_bytes) + f" (dense {dense_growth / 2**20:.0f} MiB)", "")
        row("RSS growth loading: rank shard / dense fp32 weights", ", ".join(
            f"{g / lat.dense_weight_bytes:.2f}" for g in lat.rank_rss_load_growth_bytes), "")
    console.print(table)


def eval_command(
    model: str = typer.Argument(..., help="Pretrained DISCO model: a name (resnet50-disco-2node) or a folder "
                                          "written by sparsify (its dense counterpart beside it or published)."),
    data: Optional[str] = typer.Option(
        None, "--data", help="A folder in the task's format (classification: an ImageFolder root, val/ inside); "
                             "default: the task's embedded set (digits)."),
    bandwidth: str = typer.Option("10mbit,100mbit,1gbit", "--bandwidth", help="Comma-separated emulated links."),
    backend: str = typer.Option("mpi", "--backend", help="mpi | gloo"),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", min=1,
        help="Timed rounds per latency figure (dense, compute alone and DISCO interleaved in each; default 11)."),
    paper_size: Optional[int] = typer.Option(
        None, "--paper-size", min=0,
        help="Also account/time at this size where the model's size is not fixed (0: skip; default: the task's "
             "deployment size, 224 for classification, 512 for segmentation, 256 LR for super-resolution, "
             "640 for detection)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Accuracy and bytes only."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result (with environment) as JSON on stdout instead of the table."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the whole result (with environment) to this file."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds any rank may wait on a peer before the run fails."),
    engine: str = typer.Option("torch", "--engine", help="Accuracy and traffic runs on torch, onnx (exported, on "
                               "onnxruntime) or one per rank, e.g. torch,onnx; latency rounds run on torch."),
) -> None:
    """Distributed inference over the eval split + traffic, FLOPs, memory and latency table.

    Progress shows live on a terminal and as plain lines in a log (on stderr with --json)."""
    from disco_zoo.commands.options import check_output_path, check_timeout, parse_links
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.harness import DEFAULT_ROUNDS, EvalOptions, evaluate

    # every option is checked before the first launch, not minutes into the evaluation
    links = parse_links(bandwidth)
    if backend not in ("mpi", "gloo"):
        raise DiscoZooError(f"--backend {backend!r}: use mpi or gloo")
    if out is not None:
        check_output_path(out, "--out")
    from disco_zoo.export.engines import ENGINES

    if any(e.strip() not in ENGINES for e in engine.split(",")):
        raise DiscoZooError(f"--engine {engine!r}: use torch, onnx, or one of them per rank, comma-separated")
    opts = EvalOptions(
        data=data,
        bandwidths=tuple(text for text, _ in links),
        backend=backend,
        repeats=repeats or DEFAULT_ROUNDS,
        paper_size=paper_size,
        latency=not no_latency,
        timeout_s=check_timeout(timeout),
        engine=engine,
    )
    from disco_zoo.progress import status

    with status(f"evaluating {model}", stderr=as_json) as update:
        report = evaluate(model, opts, progress=update)
    if out is not None:
        report.write(out)
    if as_json:
        typer.echo(report.to_json(), nl=False)
    else:
        _print_report(report)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
