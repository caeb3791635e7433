"""What one ``disco-zoo eval`` measures, and how hard (shared by every harness job)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvalOptions", "DEFAULT_ROUNDS"]

# Rounds per latency figure: per-round ratios on this kind of VM move by +-15% from round to
# round (its speed drifts within seconds). ResNet-50 2-node at 224, speed-up vs dense: the
# median of 5 rounds ranged 1.90-2.33x over 7 runs, the median of 11 2.12-2.41x over 7 runs.
# A localhost round there takes ~0.6 s.
DEFAULT_ROUNDS = 11


@dataclass(frozen=True)
class EvalOptions:
    data: str | None = None  # a folder in the task's on-disk format; None: the task's embedded set
    bandwidths: tuple[str, ...] = ("10mbit", "100mbit", "1gbit")
    backend: str = "mpi"
    repeats: int = DEFAULT_ROUNDS
    warmup: int = 2
    paper_size: int | None = None  # also account and time at this size where the model's is not fixed (0: skip;
    # None: the task's deployment size, 224 for classification)
    latency: bool = True
    timeout_s: float = 120.0
    engine: str = "torch"  # accuracy and traffic runs: torch, onnx, or one per rank (latency rounds: torch)
