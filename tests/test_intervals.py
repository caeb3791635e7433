"""The 95% interval every card prints on an accuracy: Wilson's score interval."""
import math

import pytest
from scipy.optimize import brentq

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.intervals import correct_count, wilson_interval

Z95 = 1.959963984540054


def _score_test_bound(k: int, n: int, side: int) -> float:
    """Wilson's interval is where the score test just rejects: |k/n - p| = z sqrt(p(1-p)/n).
    Solved numerically, independently of the closed form under test."""
    phat = k / n
    f = lambda p: abs(phat - p) - Z95 * math.sqrt(p * (1 - p) / n)  # noqa: E731
    return brentq(f, 1e-12, phat) if side < 0 else brentq(f, phat, 1 - 1e-12)


def test_hand_worked_values():
    # 5 of 10: the textbook (0.2366, 0.7634); 0 of 10: upper bound z^2 / (n + z^2) = 0.2775
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.236593, abs=1e-6) and high == pytest.approx(0.763407, abs=1e-6)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(Z95**2 / (10 + Z95**2), rel=1e-12)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(10 / (10 + Z95**2), rel=1e-12)


@pytest.mark.parametrize("k,n", [(264, 270), (240, 270), (269, 270), (3, 7), (50, 100)])
def test_equals_the_inverted_score_test(k, n):
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(_score_test_bound(k, n, -1), abs=1e-9)
    assert high == pytest.approx(_score_test_bound(k, n, +1), abs=1e-9)
    assert low < k / n < high


def test_wider_at_higher_confidence_and_narrower_with_more_images():
    assert wilson_interval(90, 100, 0.99)[0] < wilson_interval(90, 100)[0] < wilson_interval(900, 1000)[0]


def test_recorded_fraction_back_to_a_count():
    assert correct_count(0.9777777791023254, 270) == 264  # float32 264/270 as recorded
    with pytest.raises(DiscoZooError, match="not a count out of 270"):
        correct_count(0.5001, 270)


@pytest.mark.parametrize("args", [(3, 0), (-1, 10), (11, 10), (5, 10, 1.0)])
def test_bad_input_is_a_clear_error(args):
    with pytest.raises(DiscoZooError):
        wilson_interval(*args)
