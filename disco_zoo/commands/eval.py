"""``disco-zoo eval``: measure a pretrained DISCO model against its dense counterpart."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 120)
    acc, at = report["accuracy"], report["at_input"]
    table = Table(title=f"{report['model']} on {report['nodes']} nodes vs {report['dense_model']} ({report['dataset']})")
    table.add_column("figure")
    table.add_column(f"at {at['input_size']}x{at['input_size']}", justify="right")
    paper = report.get("at_paper_size")  # accounting at 224 (ResNets)
    if paper:
        table.add_column(f"at {paper['input_size']}x{paper['input_size']}", justify="right")

    def row(label: str, here: str, there: str = "") -> None:
        table.add_row(label, here, *([there] if paper else []))

    row("top-1 DISCO (distributed) / dense", f"{acc['disco_top1']:.2%} / {acc['dense_top1']:.2%}", "-")
    for doc_key, label in (("disco_bytes", "bytes / inference, DISCO"), ("dense_tp_bytes", "bytes / inference, dense TP")):
        row(label, f"{at[doc_key]:,}", f"{paper[doc_key]:,}" if paper else "")
    row("traffic reduction vs dense TP", f"{1 / at['traffic_ratio']:.1f}x", f"{1 / paper['traffic_ratio']:.1f}x" if paper else "")
    flops = lambda d: f"{d['flops_total'] / d['flops_dense']:.2f} of dense; per node " + ", ".join(  # noqa: E731
        f"{f / d['flops_dense']:.2f}" for f in d["flops_per_node"])
    row("FLOPs", flops(at), flops(paper) if paper else "")
    row("params per node (of dense)", ", ".join(f"{p / at['params_dense']:.2f}" for p in at["params_per_node"]), "")
    row("activation peak per node (KiB)", ", ".join(f"{a / 1024:.0f}" for a in at["act_peak_per_node"]),
        ", ".join(f"{a / 1024:.0f}" for a in paper["act_peak_per_node"]) if paper else "")
    lat, lat_paper = report.get("latency"), report.get("latency_paper_size")
    if lat:
        other = lambda fmt: fmt(lat_paper) if lat_paper else ""  # noqa: E731
        ms = lambda d: f"{d['dense_single_ms']:.1f} / {d['disco_localhost_ms']:.1f} / {d['dense_tp_localhost_ms']:.1f}"  # noqa: E731
        row("latency localhost: dense 1 proc / DISCO / dense TP (ms)", ms(lat), other(ms))
        up = lambda d: f"{d['speedup_localhost_vs_dense']:.2f}x"  # noqa: E731
        row("speed-up localhost vs dense", up(lat), other(up))
        alone = lambda d: (f"{max(d['compute_alone_ms']):.1f} (localhost is "  # noqa: E731
                           f"{d['localhost_over_compute_alone']:.2f}x of it)")
        row("slowest rank's compute alone, no wire (ms)", alone(lat), other(alone))
        together = lambda d: (f"{max(d['compute_concurrent_ms']):.1f} (localhost is "  # noqa: E731
                              f"{d['localhost_over_compute_concurrent']:.2f}x of it)")
        row("every rank's compute at once, no wire (ms)", together(lat), other(together))
        ceiling = lambda d: (f"{d['speedup_ceiling_compute_alone']:.2f}x / "  # noqa: E731
                             f"{d['concurrency_penalty']:.2f}x")
        row("speed-up ceiling (dense / compute alone) / ranks at once vs alone", ceiling(lat), other(ceiling))
        for i, link in enumerate(lat["links"]):
            fmt = lambda d: (f"{d['links'][i]['disco_ms']:.0f} / {d['links'][i]['dense_tp_ms']:.0f} "  # noqa: E731
                             f"({d['links'][i]['speedup_vs_dense_tp']:.2f}x, {d['links'][i]['speedup_vs_dense_single']:.2f}x)")
            row(f"@ {link['bandwidth']}: DISCO / dense TP ms (speed-up vs TP, vs dense)", fmt(lat), other(fmt))
            pred = lambda d: (f"{d['links'][i]['disco_predicted_ms']:.0f} / "  # noqa: E731
                              f"{d['links'][i]['dense_tp_predicted_ms']:.0f} (measured/predicted "
                              f"{d['links'][i]['disco_measured_over_predicted']:.2f}, "
                              f"{d['links'][i]['dense_tp_measured_over_predicted']:.2f})")
            row(f"@ {link['bandwidth']}: cost model DISCO / dense TP ms", pred(lat), other(pred))
        row("peak RSS per rank (MiB)", ", ".join(f"{kb / 1024:.0f}" for kb in lat["rank_peak_rss_kb"]), "")
        dense_growth = max(lat["dense_rss_load_growth_bytes"], 1)
        row("RSS growth loading: rank shard / dense model", ", ".join(
            f"{g / dense_growth:.2f}" for g in lat["rank_rss_load_growth_bytes"]) + f" (dense {dense_growth / 2**20:.0f} MiB)", "")
        row("RSS growth loading: rank shard / dense fp32 weights", ", ".join(
            f"{g / lat['dense_weight_bytes']:.2f}" for g in lat["rank_rss_load_growth_bytes"]), "")
    console.print(table)


def eval_command(
    model: str = typer.Argument(..., help="Pretrained DISCO model, e.g. resnet50-disco-2node."),
    data: str = typer.Option("digits", "--data", help="'digits' or an ImageFolder root (val/ inside)."),
    bandwidth: str = typer.Option("10mbit,100mbit,1gbit", "--bandwidth", help="Comma-separated emulated links."),
    backend: str = typer.Option("mpi", "--backend", help="mpi | gloo"),
    repeats: Optional[int] = typer.Option(
        None, "--repeats", min=1,
        help="Timed rounds per latency figure (dense, compute alone and DISCO interleaved in each; default 11)."),
    paper_size: int = typer.Option(224, "--paper-size", min=0, help="Also account/time at this size (0: skip)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Accuracy and bytes only."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole result (with environment) here."),
) -> None:
    """Distributed inference over the eval split + traffic, FLOPs, memory and latency table."""
    from rich.console import Console

    from disco_zoo.evaluate import DEFAULT_ROUNDS, EvalOptions, evaluate

    opts = EvalOptions(
        data=data,
        bandwidths=tuple(b for b in bandwidth.split(",") if b),
        backend=backend,
        repeats=repeats or DEFAULT_ROUNDS,
        paper_size=paper_size,
        latency=not no_latency,
    )
    console = Console(stderr=True)
    with console.status("evaluating") as status:
        report = evaluate(model, opts, progress=lambda text: status.update(text))
    _print_report(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        tmp.replace(json_out)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
