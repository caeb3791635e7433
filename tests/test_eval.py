"""The leaderboard: CI re-measures the recorded results; cards are generated, never stale."""
import json
from pathlib import Path

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.evaluate import EvalOptions, evaluate
from disco_zoo.model_cards import RESULTS_DIR, write_cards

SPECS = json.loads((Path(__file__).resolve().parent.parent / "eval" / "specs.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS["ci_models"])
def test_recorded_results_reproduce(name):
    recorded = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    fresh = evaluate(name, EvalOptions(latency=False, paper_size=0))
    tol = SPECS["tolerance"]["top1_abs"]
    for key in ("disco_top1", "dense_top1"):
        assert abs(fresh["accuracy"][key] - recorded["accuracy"][key]) <= tol, key
    for key in ("disco_bytes", "dense_tp_bytes", "bytes_per_pair", "flops_per_node", "params_per_node"):
        assert fresh["at_input"][key] == recorded["at_input"][key], key
    # The runtime's counters agree with the accounting, pair by pair, to the byte.
    assert fresh["at_input"]["measured_bytes_per_pair"] == fresh["at_input"]["bytes_per_pair"]
    assert fresh["at_input"]["input_scatter_bytes"] == fresh["at_input"]["input_scatter_bytes_expected"]
    # The distributed run classifies exactly like the single-process masked model.
    assert fresh["accuracy"]["disco_top1"] == fresh["accuracy"]["disco_single_process_top1"]


@pytest.mark.parametrize("name", SPECS["published"])
def test_every_published_model_has_a_recorded_result(name):
    doc = json.loads((RESULTS_DIR / f"{name}.json").read_text())
    assert doc["model"] == name
    assert doc["environment"]["torch"]
    assert doc["at_input"]["measured_bytes_per_pair"] == doc["at_input"]["bytes_per_pair"]


def test_model_cards_are_not_stale():
    stale = write_cards(check=True)
    assert stale == [], f"run `disco-zoo cards`: stale {stale}"


def test_eval_refuses_dense_models():
    with pytest.raises(DiscoZooError, match="dense model"):
        evaluate("resnet50")
