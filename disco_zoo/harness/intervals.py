"""Confidence intervals on accuracies measured on a small test split.

Why: on 270 test images one image is 0.37 points, so a card that prints "97.78%" next
to "97.04%" without an interval invites reading noise as a difference. The Wilson score
interval is used (not the normal approximation) because it stays inside [0, 1] and keeps
its coverage near 0% and 100% accuracy, where these models sit.
"""
from __future__ import annotations

import math

from disco_zoo.errors import DiscoZooError

__all__ = ["wilson_interval", "correct_count"]


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2.0))


def correct_count(fraction: float, n: int) -> int:
    """How many of ``n`` were right, from an accuracy recorded as a fraction (the recorded
    float32 fraction is k/n rounded, so rounding recovers k exactly)."""
    k = round(fraction * n)
    if not 0 <= k <= n or abs(k - fraction * n) > 1e-3:
        raise DiscoZooError(f"accuracy {fraction!r} is not a count out of {n} images; is the image count right?")
    return k


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) Wilson score interval of a proportion ``successes``/``n``."""
    if n <= 0 or not 0 <= successes <= n:
        raise DiscoZooError(f"a proportion needs 0 <= successes <= n and n > 0, got {successes}/{n}")
    if not 0.0 < confidence < 1.0:
        raise DiscoZooError(f"confidence must be in (0, 1), got {confidence}")
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
