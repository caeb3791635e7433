"""``disco-zoo plan``: an EdgeFlow plan for a model over a device profile, vs the baselines."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer

from disco_zoo.errors import DiscoZooError

OVERRUN_WARN = 0.05  # run-plan warns when the host ran this much (of the prediction) behind the devices

if TYPE_CHECKING:
    from disco_zoo.planner.profiles import Profile


def plan_command(
    model: str = typer.Argument(..., help="Registered model name, e.g. resnet50."),
    devices: str = typer.Option(..., "--devices", help="Device profile JSON file, or a preset name."),
    input_size: Optional[int] = typer.Option(
        None, "--input-size", help="Input height and width (default 224; a DISCO model's own size)."),
    ratios: Optional[str] = typer.Option(
        None, "--ratios", help="DISCO: plan the published variant split at these ratios, e.g. '0.6,0.4'."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Classifier size (default: the model's)."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the plan (JSON) here."),
    gantt: Optional[str] = typer.Option(None, "--gantt", help="Draw the per-device timeline (PNG) here."),
    compare: bool = typer.Option(False, "--compare", help="DISCO model: compare every strategy (dense on the fastest "
                                 "device, EdgeFlow and its baselines, dense TP, each published DISCO variant) on the "
                                 "profile and at a fast LAN and slow Wi-Fi."),
    plot: Optional[str] = typer.Option(None, "--plot", help="With --compare: draw the bars (PNG) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout instead of the table."),
) -> None:
    """Plan MODEL over the devices in a profile: a dense model gets an EdgeFlow plan (vs each
    baseline), a DISCO model a placement of its nodes and the best split ratio."""
    from disco_zoo.planner.profiles import load_profile
    from disco_zoo.planner.report import build_graph, plan_and_compare

    profile = load_profile(devices)
    if plot and not compare:
        raise DiscoZooError("--plot draws the --compare table; add --compare")
    if compare:
        if out or gantt or ratios is not None or num_classes is not None:
            raise DiscoZooError("--compare takes MODEL, --devices, --input-size, --plot and --json only")
        _print_comparison(model, profile, input_size, plot, as_json)
        return
    if _is_disco(model):
        if gantt or num_classes is not None:
            raise DiscoZooError("--gantt and --num-classes are for EdgeFlow plans of dense models")
        _print_disco_plan(model, profile, input_size, ratios, as_json, out)
        return
    if ratios is not None:
        raise DiscoZooError("--ratios picks a published DISCO variant; an EdgeFlow plan of a dense model chooses its own splits")
    input_size = input_size or 224
    report = plan_and_compare(model, build_graph(model, input_size, num_classes), profile, out, gantt, num_classes)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    ef = report["edgeflow"]["latency_s"]
    table = Table(title=f"{model} at {input_size}x{input_size} on {profile.name} (predicted)")
    table.add_column("plan")
    table.add_column("latency ms", justify="right")
    table.add_column("MB sent", justify="right")
    table.add_column("EdgeFlow speedup", justify="right")
    table.add_row("edgeflow", f"{ef * 1e3:.2f}", f"{report['edgeflow']['bytes'] / 1e6:.2f}", "1.00x")
    for name, b in report["baselines"].items():
        table.add_row(name, f"{b['latency_s'] * 1e3:.2f}", f"{b['bytes'] / 1e6:.2f}", f"{b['latency_s'] / ef:.2f}x")
    console = Console()
    console.print(table)
    if report["is_baseline"]:
        console.print(f"EdgeFlow found no plan faster than the {report['origin'].removeprefix('baseline ')} "
                      "baseline: the plan written is that baseline's plan, unchanged.")
    else:
        console.print(f"plan: {report['origin']}")
    console.print(f"planning {report['lp']['plan_seconds'] * 1e3:.0f} ms: {report['lp']['dp_solves']} exact layer "
                  f"splits, {report['lp']['passes']} look-ahead passes, {report['lp']['subsets_pruned']} device "
                  "subsets pruned by a bound")
    if out:
        console.print(f"plan written to {out}")
    if gantt:
        console.print(f"timeline drawn to {gantt}")


def _is_disco(model: str) -> bool:
    """Whether MODEL names a pretrained DISCO model (else it is a dense registry model)."""
    from disco_zoo.hub import get_pretrained_cfg

    try:
        return get_pretrained_cfg(model).kind == "disco"
    except DiscoZooError:
        return False


def _print_disco_plan(model: str, profile: "Profile", input_size: Optional[int], ratios: Optional[str],
                      as_json: bool, out: Optional[str] = None) -> None:
    from disco_zoo.planner.disco_report import plan_disco_model

    split = None
    if ratios is not None:
        try:
            split = [float(r) for r in ratios.split(",")]
        except ValueError:
            raise DiscoZooError(f"--ratios {ratios!r}: give numbers separated by commas, e.g. '0.6,0.4'") from None
    doc = plan_disco_model(model, profile, input_size, split, out)
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    side = doc["input_shape"][-1]
    table = Table(title=f"{doc['model']} at {side}x{side} on {profile.name} (predicted, DISCO)")
    for column in ("node -> device", "latency ms", "MB sent", "memory per node MiB"):
        table.add_column(column, justify="left" if column.startswith("node") else "right")
    for p in doc["placements"][:5]:
        table.add_row(", ".join(f"{k}->{d}" for k, d in enumerate(p["devices"])), f"{p['latency_s'] * 1e3:.1f}",
                      f"{p['bytes'] / 1e6:.2f}", ", ".join(f"{m / 2**20:.1f}" for m in p["memory_per_node"]))
    console = Console()
    console.print(table)
    if doc["unused_devices"]:
        console.print(f"unused: {', '.join(doc['unused_devices'])} (no faster placement uses it)")
    if "optimum" in doc:
        opt, near = doc["optimum"], doc["closest_published"]
        console.print(f"best split on these devices: {opt['share']:.2f}/{1 - opt['share']:.2f}, "
                      f"{opt['latency_s'] * 1e3:.1f} ms predicted; closest published variant {near['name']} "
                      f"({near['share']:.2f}/{1 - near['share']:.2f}): {near['latency_s'] * 1e3:.1f} ms, the optimum "
                      f"would be {near['optimum_gain']:.2f}x faster (a variant at that split must be trained: "
                      "`disco-zoo sparsify --ratios`).")
    if out:
        console.print(f"plan written to {out} (run it: disco-zoo run-plan {out} --slowdown S)")


def _print_comparison(model: str, profile: "Profile", input_size: Optional[int], plot: Optional[str],
                      as_json: bool) -> None:
    from disco_zoo.planner.disco_report import compare_report

    doc = compare_report(model, profile, input_size)
    if plot:
        from disco_zoo.planner.compare_plot import draw_comparison

        draw_comparison(doc["tables"], plot, title=f"{doc['dense_model']} and its DISCO variants at "
                                                   f"{doc['input_size']}px on {profile.name}")
        doc["plot"] = plot
    if as_json:
        typer.echo(json.dumps(doc, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for setting, rows in doc["tables"].items():
        fastest = min(r["latency_s"] for r in rows)
        table = Table(title=f"{doc['dense_model']} at {doc['input_size']}px on {profile.name}, links {setting} (predicted)")
        for column in ("strategy", "latency ms", "vs best", "MB sent", "largest device MiB", "devices"):
            table.add_column(column, justify="left" if column in ("strategy", "devices") else "right")
        for r in rows:
            table.add_row(r["strategy"], f"{r['latency_s'] * 1e3:.1f}", f"{r['latency_s'] / fastest:.2f}x",
                          f"{r['bytes'] / 1e6:.2f}", f"{r['max_memory_bytes'] / 2**20:.1f}", ", ".join(r["devices"]))
        console.print(table)
    if doc["skipped_variants"]:
        console.print(f"not compared (more nodes than devices): {', '.join(doc['skipped_variants'])}")
    if plot:
        console.print(f"bars drawn to {plot}")


def run_plan_command(
    plan: str = typer.Argument(..., help="Plan JSON written by `disco-zoo plan --out`."),
    backend: str = typer.Option("mpi", "--backend", help="mpi or gloo."),
    stretch: bool = typer.Option(True, "--stretch/--no-stretch",
                                 help="Emulate each device's speed by stretching unit compute to its profile."),
    slowdown: float = typer.Option(1.0, "--slowdown", help="Divide every profile rate by this (to emulate here)."),
    emulate_links: bool = typer.Option(False, "--emulate-links", help="Emulate the profile's link of every device pair."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights and input."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds any rank may wait on a peer."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON document on stdout instead of the table."),
) -> None:
    """Execute PLAN, one process per device; print measured vs predicted latency and bytes."""
    from disco_zoo.planner.disco_plan_file import is_disco_plan
    from disco_zoo.runtime.edgeflow_executor import execute_plan

    if _reads_as(plan, is_disco_plan):
        _run_disco_plan(plan, backend, stretch, slowdown, emulate_links, timeout, as_json)
        return

    report = execute_plan(plan, backend=backend, seed=seed, stretch=stretch, slowdown=slowdown,
                          emulate_links=emulate_links, timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']} on {', '.join(report['devices'])}")
    table.add_column("")
    table.add_column("measured", justify="right")
    table.add_column("predicted", justify="right")
    table.add_row("latency ms", f"{report['measured_latency_s'] * 1e3:.2f}",
                  f"{report['predicted_this_run_s'] * 1e3:.2f}" if stretch else "-")
    table.add_row("bytes", str(report["bytes_measured"]), str(report["bytes_predicted"]))
    Console().print(table)
    if stretch:
        Console().print(f"measured / predicted: {report['measured_latency_s'] / report['predicted_this_run_s']:.3f}")
        _warn_overrun(report, slowdown)


def _warn_overrun(report: dict[str, Any], slowdown: float) -> None:
    """Say so when this host computed slower than the emulated devices: stretching cannot
    speed a unit up, so the measurement is then of this host, not of the plan."""
    worst = max([report.get("overrun_s", 0.0)] + [r.get("overrun_s", 0.0) for r in report.get("per_rank", [])])
    if worst > OVERRUN_WARN * report["predicted_this_run_s"]:
        typer.echo(f"warning: this host computed {worst * 1e3:.1f} ms slower than the emulated devices "
                   f"({worst / report['predicted_this_run_s']:.0%} of the prediction), so measured exceeds predicted "
                   f"for the host's sake; rerun with a larger --slowdown (e.g. {slowdown * 2:g})", err=True)


def _reads_as(path: str, check: "Callable[[Any], bool]") -> bool:
    """Whether the JSON file at ``path`` passes ``check`` (unreadable files are for the loader to report)."""
    try:
        return check(json.loads(open(path).read()))
    except (OSError, ValueError):
        return False


def _run_disco_plan(plan: str, backend: str, stretch: bool, slowdown: float, emulate_links: bool, timeout: float,
                    as_json: bool) -> None:
    from disco_zoo.runtime.disco_plan_executor import execute_disco_plan

    if not stretch:
        raise DiscoZooError("a DISCO plan always runs with compute stretched to its devices; drop --no-stretch")
    report = execute_disco_plan(plan, backend=backend, slowdown=slowdown, emulate_links=emulate_links,
                                timeout_s=timeout)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']} on {', '.join(report['devices'])} (compute x{slowdown:g} slower, "
                        f"links {'emulated' if emulate_links else 'ideal'})")
    table.add_column("")
    table.add_column("measured", justify="right")
    table.add_column("predicted", justify="right")
    table.add_row("latency ms", f"{report['measured_latency_s'] * 1e3:.2f}", f"{report['predicted_this_run_s'] * 1e3:.2f}")
    table.add_row("bytes", str(report["bytes_measured"]), str(report["bytes_predicted"]))
    Console().print(table)
    Console().print(f"measured / predicted: {report['measured_over_predicted']:.3f}")
    _warn_overrun(report, slowdown)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
    app.command("run-plan")(run_plan_command)
