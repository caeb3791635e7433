"""Bars per strategy per profile setting: the comparison as a picture (matplotlib, PNG)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def draw_comparison(tables: dict[str, list[dict[str, Any]]], path: str | Path, title: str = "") -> None:
    """One group of bars per setting (profile, link speed), one bar per strategy, latency
    on a log axis (strategies differ by orders of magnitude on slow links)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(tables)
    strategies = list(dict.fromkeys(row["strategy"] for rows in tables.values() for row in rows))
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(settings) + 2), 4.5))
    cmap = plt.get_cmap("tab10")
    for s, strategy in enumerate(strategies):
        xs, ys = [], []
        for i, setting in enumerate(settings):
            row = next((r for r in tables[setting] if r["strategy"] == strategy), None)
            if row is not None:
                xs.append(i - 0.4 + (s + 0.5) * width)
                ys.append(row["latency_s"] * 1e3)
        ax.bar(xs, ys, width=width, color=cmap(s % 10), label=strategy)
    ax.set_xticks(range(len(settings)), settings, rotation=15, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("predicted latency (ms, log)")
    ax.set_title(title or "strategies compared (model of time)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
