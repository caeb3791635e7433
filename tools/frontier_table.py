"""Write one architecture's traffic frontier, eval/frontier/<arch>.json, from its folders.

    python tools/frontier_table.py --dense hub/resnet50.digits --out eval/frontier/resnet50_disco_2node.json \\
        hub/resnet50_disco_2node.digits /tmp/frontier/resnet50_disco_2node_t0.1 ...

Every number is measured (:mod:`disco_zoo.harness.frontier`): each folder loaded and
verified, scored on the test split as stored, and accounted. eval/frontier.sh calls it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.frontier import frontier_table


def _print(table: dict) -> None:
    dense = table["dense_top1"]
    print(f"{table['arch']} vs {table['dense_model']} (top-1 {dense:.4f}, {table['n_test']} test images)")
    print(f"{'budget':>7} {'traffic':>8} {'1/ratio':>8} {'top-1':>7} {'delta':>7} {'flops':>6} {'params':>6}")
    for p in table["points"]:
        print(f"{p['budget']:>7g} {p['traffic_ratio']:>8.4f} {1 / p['traffic_ratio']:>8.2f} {p['top1']:>7.4f} "
              f"{p['top1'] - dense:>+7.4f} {p['flops_ratio']:>6.3f} {p['max_node_params_ratio']:>6.3f}  {p['folder']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sparsified DISCO folders of one architecture")
    parser.add_argument("--dense", type=Path, required=True, help="their dense counterpart's folder")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    try:
        table = frontier_table(args.dense, args.folders)
    except DiscoZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    partial.write_text(json.dumps(table, indent=1) + "\n")
    partial.replace(args.out)  # never a half-written table
    _print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
