"""The leaderboard: CI re-measures the recorded results; cards are generated, never stale."""
import json
from pathlib import Path

import pytest

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness import EvalOptions, EvalReport, evaluate
from disco_zoo.hub import get_pretrained_cfg, list_pretrained
from disco_zoo.model_cards import RESULTS_DIR, write_cards
from disco_zoo.tasks import find_metric

SPECS = json.loads((Path(__file__).resolve().parent.parent / "eval" / "specs.json").read_text())
PUBLISHED_DISCO = [name for name in list_pretrained() if get_pretrained_cfg(name).kind == "disco"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SPECS["ci_models"])
def test_recorded_results_reproduce(name):
    recorded = EvalReport.read(RESULTS_DIR / f"{name}.json")
    fresh = evaluate(name, EvalOptions(latency=False, paper_size=0))
    for metric, value in recorded.accuracy.disco.items():  # every metric of the model's task
        tol = SPECS["tolerance"][f"{metric}_abs"]
        for run in ("disco", "dense"):
            fresh_value = getattr(fresh.accuracy, run)[metric]
            assert abs(fresh_value - getattr(recorded.accuracy, run)[metric]) <= tol, (run, metric)
    for key in ("disco_bytes", "dense_tp_bytes", "bytes_per_pair", "flops_per_node", "params_per_node"):
        assert getattr(fresh.at_input, key) == getattr(recorded.at_input, key), key
    # The runtime's counters agree with the accounting, pair by pair, to the byte.
    assert fresh.at_input.measured_bytes_per_pair == fresh.at_input.bytes_per_pair
    assert fresh.at_input.input_scatter_bytes == fresh.at_input.input_scatter_bytes_expected > 0
    # The distributed run answers like the single-process masked model: exactly where the
    # metric counts right images (top-1), within float rounding of the outputs elsewhere.
    for metric, value in fresh.accuracy.disco.items():
        exact = find_metric(metric).per_image
        tol = 0.0 if exact else SPECS["tolerance"][f"{metric}_abs"] / 10
        assert abs(value - fresh.accuracy.disco_single_process[metric]) <= tol, metric
    assert fresh.accuracy.images == recorded.accuracy.images
    assert fresh.at_paper_size is None and fresh.latency is None
    assert EvalReport.from_dict(json.loads(fresh.to_json())) == fresh


def test_published_disco_models_are_known_from_the_hub_alone():
    assert "published" not in SPECS  # hub/ is the one list of what is published
    assert set(SPECS["ci_models"]) <= set(PUBLISHED_DISCO)
    assert len(PUBLISHED_DISCO) >= len(SPECS["ci_models"])


@pytest.mark.parametrize("name", PUBLISHED_DISCO)
def test_every_published_model_has_a_recorded_result(name):
    report = EvalReport.read(RESULTS_DIR / f"{name}.json")
    assert report.model == name
    assert report.dense_model == get_pretrained_cfg(name).dense
    assert report.environment.torch
    assert report.at_input.measured_bytes_per_pair == report.at_input.bytes_per_pair
    # where the model's input size is fixed there is nothing at the paper size
    assert (report.at_paper_size is None) == get_pretrained_cfg(name).fixed_input_size


def test_model_cards_are_not_stale():
    stale = write_cards(check=True)
    assert stale == [], f"run `disco-zoo cards`: stale {stale}"


def test_eval_refuses_dense_models():
    with pytest.raises(DiscoZooError, match="dense model"):
        evaluate("resnet50")
