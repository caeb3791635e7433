"""The committed model cards, parsed back as the Hugging Face Hub parses them: their metadata
and their text say what the recorded results and the configs hold."""
import dataclasses
import json
import re

import pytest
from huggingface_hub import ModelCard

from disco_zoo.card_facts import bandwidth_text, link_programs_text, package_license
from disco_zoo.harness.intervals import correct_count, wilson_interval
from disco_zoo.hub import REPO_HUB, list_pretrained
from disco_zoo.model_cards import CARDS_FILE, card_data, load_results, render_folder_card, render_model_cards
from disco_zoo.store import load_folder_config
from disco_zoo.tasks import task_of

ROOT = REPO_HUB.parent
PUBLISHED = [name for name in list_pretrained() if (REPO_HUB / name / "config.json").is_file()]


@pytest.fixture(scope="module")
def results():
    return load_results()


def _interval(value, n):
    low, high = wilson_interval(correct_count(value, n), n)
    return f"{value:.2%} [{low:.1%}, {high:.1%}]"


@pytest.mark.parametrize("name", PUBLISHED)
def test_folder_card_metadata_parses_back_to_the_recorded_values(name, results):
    config = load_folder_config(REPO_HUB / name)
    card = ModelCard.load(REPO_HUB / name / "README.md")
    data = card.data
    assert data.license == package_license() == "apache-2.0"
    assert data.library_name == "disco-zoo"
    assert data.pipeline_tag == task_of(config).hub_tag
    assert data.datasets == [config.dataset]
    assert {"disco-zoo", config.kind} <= set(data.tags)
    assert data.model_name == name
    (result,) = data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_split) == (task_of(config).hub_tag, config.dataset, "test")
    if config.kind == "disco":
        assert result.metric_value == results[name].accuracy.disco[task_of(config).primary_metric.name]
        assert data.base_model == load_folder_config(REPO_HUB / config.dense).hf_hub_id
    else:
        assert result.metric_value == config.metrics[f"test_{task_of(config).primary_metric.name}"]


@pytest.mark.parametrize("name", [n for n in PUBLISHED if load_folder_config(REPO_HUB / n).dataset == "digits"])
def test_folder_card_text_says_what_the_numbers_are(name, results):
    config = load_folder_config(REPO_HUB / name)
    text = (REPO_HUB / name / "README.md").read_text()
    report = results.get(name)
    n = report.accuracy.images if report else 270
    assert f"{n} test images" in text and f"one image is {100 / n:.2f} points" in text and "1,797" in text
    assert _interval(report.accuracy.disco_top1 if report else config.metrics["test_top1"], n) in text
    if report:
        assert _interval(report.accuracy.dense_top1, n) in text
    assert f"mean {list(config.mean)}, std {list(config.std)}" in text and config.interpolation in text
    assert "- Not for: real photographs" in text
    assert "apache-2.0" in text and "LICENSE" in text
    if config.kind == "disco":
        assert f"-n {config.nodes} python -m disco_zoo.runtime.worker" in text


@pytest.mark.parametrize("name", [n for n in PUBLISHED if load_folder_config(REPO_HUB / n).kind == "disco"])
def test_folder_card_names_both_baselines_and_the_break_even(name, results):
    text = (REPO_HUB / name / "README.md").read_text()
    report = results[name]
    for lat in (report.latency, report.latency_paper_size):
        if lat is None:
            continue
        for link in lat.links:
            assert (f"| {link.bandwidth} | {link.disco_ms:.1f} | {link.dense_tp_ms:.1f} | "
                    f"{link.speedup_vs_dense_tp:.2f}x | {link.speedup_vs_dense_single:.2f}x |") in text
        be = lat.break_even.bandwidth_bps
        said = (f"beats one dense device above **{bandwidth_text(be)}**" if be
                else "does not beat one dense device at any bandwidth")
        assert f"Break-even at {lat.input_size}x{lat.input_size}: DISCO {said}" in text
        own = link_programs_text(lat)  # schema 3: each link against its own launch's compute
        assert own is None or f"At {lat.input_size}x{lat.input_size}, {own}." in text
    links = re.findall(r"!\[latency against bandwidth\]\(([^)]+)\)", text)
    if report.latency is None:
        assert not links and "Latency not recorded yet" in text
        return
    (link,) = links
    assert (REPO_HUB / name / link).resolve().read_bytes().startswith(b"\x89PNG")


def test_model_cards_md_shows_both_baselines_and_embeds_existing_plots(results):
    text = CARDS_FILE.read_text()
    assert "vs dense TP" in text and "vs one dense device" in text
    for name, report in results.items():
        lat = report.latency
        if lat is None:  # recorded with --no-latency: no speed row
            assert not any(line.startswith(f"| `{name}` | {report.at_input.input_size}x") for line in text.splitlines())
            continue
        be = lat.break_even.bandwidth_bps
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` | {lat.input_size}x"))
        assert (bandwidth_text(be) if be else "never") in row
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (ROOT / link).is_file(), link


def test_licence_from_the_config_wins_and_the_licence_file_exists():
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    config = load_folder_config(REPO_HUB / "resnet18.digits")
    assert card_data(dataclasses.replace(config, license="MIT")).license == "mit"


def test_frontier_section_renders_from_a_frontier_file(tmp_path, results):
    doc = {"arch": "resnet50_disco_2node", "dense_model": "resnet50.digits", "dense_top1": 262 / 270, "n_test": 270,
           "points": [{"budget": 0.1, "traffic_ratio": 0.09, "top1": 261 / 270, "flops_ratio": 0.3,
                       "max_node_params_ratio": 0.5, "folder": "hub/x"}]}
    (tmp_path / "resnet50_disco_2node.json").write_text(json.dumps(doc))
    text = render_model_cards(results, frontier_dir=tmp_path)
    assert "![resnet50_disco_2node](eval/plots/resnet50_disco_2node.frontier.png)" in text
    assert f"| 0.1 | {1 / 0.09:.1f}x less | {_interval(261 / 270, 270)} |" in text
    assert "## Accuracy against traffic" not in render_model_cards(results, frontier_dir=tmp_path / "none")
    name = "resnet50_disco_2node.digits"
    card = render_folder_card(load_folder_config(REPO_HUB / name), results[name], frontier_dir=tmp_path)
    assert "![accuracy against traffic](../../eval/plots/resnet50_disco_2node.frontier.png)" in card
    other = render_folder_card(load_folder_config(REPO_HUB / "resnet18_disco_2node.digits"), frontier_dir=tmp_path)
    assert "Accuracy against traffic" not in other
