"""DISCO vs EdgeFlow vs every baseline on every preset, at the profile's links and at two
link speeds, all predicted by the one model of time; and each DISCO model's best placement
and split ratio per preset.

    .venv/bin/python bench/bench_strategies.py [--model resnet50_disco_2node.digits]
        [--input-size 224] [--profiles ...] [--plot-dir bench_strategies] [--out bench_strategies.json]

Table per preset and link setting: predicted latency, bytes, the largest device's memory and
each strategy's latency over the fastest (1.00x = the winner). Then, per preset, the DISCO
model's placement, the best node-0 share on those devices and what it would gain over the
closest published variant. Prints numbers, asserts nothing (nothing here is measured on a
device: a profile's rates and links are its own figures).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from disco_zoo.planner import load_profile
from disco_zoo.planner.compare_plot import draw_comparison
from disco_zoo.planner.disco_report import compare_report, plan_disco_model
from disco_zoo.planner.profiles import list_presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50_disco_2node.digits")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--profiles", nargs="*", default=None)
    parser.add_argument("--plot-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    console = Console(width=140)
    results = {}
    for preset in args.profiles or list_presets():
        profile = load_profile(preset)
        doc = compare_report(args.model, profile, args.input_size)
        placement = plan_disco_model(args.model, profile, args.input_size)
        results[preset] = {"compare": doc, "placement": placement}
        for setting, rows in doc["tables"].items():
            best = min(r["latency_s"] for r in rows)
            table = Table(title=f"{doc['dense_model']} at {args.input_size}px, {preset}, links {setting}")
            for column in ("strategy", "latency ms", "over fastest", "MB", "largest device MiB"):
                table.add_column(column, justify="left" if column == "strategy" else "right")
            for r in rows:
                table.add_row(r["strategy"], f"{r['latency_s'] * 1e3:.1f}", f"{r['latency_s'] / best:.2f}x",
                              f"{r['bytes'] / 1e6:.2f}", f"{r['max_memory_bytes'] / 2**20:.1f}")
            console.print(table)
        if "optimum" in placement:
            near = placement["closest_published"]
            console.print(f"{args.model} on {preset}: nodes on {', '.join(placement['placement']['devices'])}, "
                          f"{placement['placement']['latency_s'] * 1e3:.1f} ms; best share "
                          f"{placement['optimum']['share']:.2f} at {placement['optimum']['latency_s'] * 1e3:.1f} ms, "
                          f"{near['optimum_gain']:.2f}x over {near['name']} ({near['share']:.2f})")
        if args.plot_dir:
            args.plot_dir.mkdir(parents=True, exist_ok=True)
            draw_comparison(doc["tables"], args.plot_dir / f"{preset}.png", f"{doc['dense_model']} on {preset}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
