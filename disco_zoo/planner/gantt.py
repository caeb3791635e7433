"""Per-device timeline picture of a plan, as the model of time replays it (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path

from disco_zoo.planner.profiles import Profile
from disco_zoo.planner.simulate import Simulation


def draw_gantt(sim: Simulation, profile: Profile, path: str | Path, title: str = "") -> None:
    """One row per device, one bar per unit (compute time), colour by layer order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(profile)
    fig, ax = plt.subplots(figsize=(10, 1 + 0.6 * n))
    cmap = plt.get_cmap("tab20")
    order = {e.layer: k for k, e in enumerate(sim.timeline)}
    for e in sim.timeline:
        if e.finish > e.start:
            ax.barh(e.device, (e.finish - e.start) * 1e3, left=e.start * 1e3, height=0.6,
                    color=cmap(order[e.layer] % 20), edgecolor="none")
    ax.set_yticks(range(n), [d.name for d in profile.devices])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms)")
    ax.axvline(sim.latency_s * 1e3, color="k", lw=1, ls="--")
    ax.set_title(title or f"predicted latency {sim.latency_s * 1e3:.2f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
