"""Model cards generated from the hub configs and the recorded eval results.

``MODEL_CARDS.md`` at the repository root and each hub folder's ``README.md`` (its
Hugging Face model card) are outputs of this module, never edited by hand; a test
fails when a committed card differs from what this module renders. A folder card is a
:class:`huggingface_hub.ModelCard` whose metadata is a
:class:`huggingface_hub.ModelCardData` (licence, pipeline tag from the task object,
library, data set, tags, base model, and a model-index of the recorded results), so the
Hub reads it as it reads any model's card. The figures and sentences come from
:mod:`disco_zoo.card_facts`; the figures' PNGs from :mod:`disco_zoo.plots`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from disco_zoo.card_facts import (
    Accuracy, DatasetFacts, accuracy, bandwidth_text, break_even_check, dataset_facts, license_of, link_programs_text,
    shared_cores, speed_rows,
)
from disco_zoo.harness.report import EvalReport, LatencyResult
from disco_zoo.hub import REPO_HUB, list_pretrained
from disco_zoo.plots import (
    FRONTIER_DIR, Frontier, frontier_files, frontier_plot_name, latency_plot_name, read_frontier,
)
from disco_zoo.registry import get_entry
from disco_zoo.store import FolderConfig, load_folder_config
from disco_zoo.tasks import Task, task_of

__all__ = ["RESULTS_DIR", "CARDS_FILE", "LIBRARY_NAME", "load_results", "card_data", "render_model_cards",
           "render_folder_card", "write_cards"]

_STORED_AS = {  # how a card words a folder's storage dtype (disco_zoo.weight_storage); every node computes in fp32
    "fp32": "fp32",
    "fp16": "fp16 (weight matrices; computed in fp32)",
    "int8": "int8 (weight matrices, one fp32 scale per output channel; computed in fp32)",
}

ROOT = REPO_HUB.parent
RESULTS_DIR = ROOT / "eval" / "results"
CARDS_FILE = ROOT / "MODEL_CARDS.md"
LIBRARY_NAME = "disco-zoo"
BASELINES = ("Two baselines, named every time: **dense TP** is the same split over the same link with every "
             "cross-node channel sent (within-layer parallelism without DISCO's sparsity); **one dense device** "
             "is the dense model in one process, with no link at all. Splitting pays only where DISCO beats the "
             "second.")


def load_results(results_dir: Path = RESULTS_DIR) -> dict[str, EvalReport]:
    """Recorded ``disco-zoo eval --json`` documents, keyed by ``arch.tag``."""
    results = {}
    for path in sorted(results_dir.glob("*.json")):
        report = EvalReport.read(path)
        results[report.model] = report
    return results


def _published_configs(hub_root: Path) -> list[FolderConfig]:
    return [load_folder_config(hub_root / name) for name in list_pretrained()
            if (hub_root / name / "config.json").is_file()]


def _mib(values: list[int]) -> str:
    return " / ".join(f"{v / 2**20:.1f}" for v in values)


def _headline_value(config: FolderConfig, task: Task, result: EvalReport | None) -> float | None:
    """The headline metric: the distributed run's where recorded, else the config's test figure."""
    name = task.primary_metric.name
    value = result.accuracy.disco[name] if result is not None else config.metrics.get(f"test_{name}")
    if value is None or facts.test_images is None or not task.primary_metric.per_image:
        return None
    return accuracy(value, facts.test_images)


def _sections(result: EvalReport) -> list[LatencyResult]:
    return [lat for lat in (result.latency, result.latency_paper_size) if lat is not None]


# -- the Hugging Face metadata ----------------------------------------------------------------


def card_data(config: FolderConfig, result: EvalReport | None = None) -> Any:
    """The card's :class:`huggingface_hub.ModelCardData`."""
    from huggingface_hub import EvalResult, ModelCardData

    task = task_of(config)
    facts = dataset_facts(config, result)
    metric = task.primary_metric
    results = []
    value = result.accuracy.disco[metric.name] if result is not None else config.metrics.get(f"test_{metric.name}")
    if value is not None:
        how = f"distributed over {config.nodes} processes" if result is not None else "one process"
        results.append(EvalResult(
            task_type=task.hub_tag, dataset_type=config.dataset, dataset_name=facts.title, dataset_split="test",
            metric_type=metric.name, metric_name=f"{metric.label} ({how})", metric_value=value))
    dense = config.dense and (REPO_HUB / config.dense / "config.json").is_file()
    return ModelCardData(
        license=license_of(config),
        library_name=LIBRARY_NAME,
        pipeline_tag=task.hub_tag,
        datasets=[config.dataset],
        tags=[LIBRARY_NAME, config.kind, get_entry(config.arch).family],
        base_model=(load_folder_config(REPO_HUB / config.dense).hf_hub_id or None) if dense else None,
        model_name=config.name,
        eval_results=results or None,
    )


# -- the folder cards ---------------------------------------------------------------------------


def _accuracy_lines(config: FolderConfig, task: Task, result: EvalReport | None, facts: DatasetFacts) -> list[str]:
    metric = task.primary_metric
    lines = ["## Accuracy", "", f"Data: {facts.description}."]
    if facts.test_images is None:
        return lines + ["", *[f"- {key}: {value}" for key, value in sorted(config.metrics.items())]]
    if not metric.per_image:
        return lines + _metric_table(config, task, result)
    n = facts.test_images
    lines += [f"On {n} test images one image is {facts.point_per_image:.2f} points; intervals are 95% Wilson "
              "score intervals.", "", f"| run | {metric.label} [95% interval] |", "|---|---|"]
    if result is None:
        value = config.metrics.get(f"test_{metric.name}")
        if value is not None:
            lines.append(f"| this model, one process | {accuracy(value, n).text()} |")
        return lines + [""]
    acc = result.accuracy
    disco, dense = acc.disco[metric.name], acc.dense[metric.name]
    lines += [
        f"| DISCO, distributed over {result.nodes} processes | {accuracy(disco, n).text()} |",
        f"| DISCO, one process | {accuracy(acc.disco_single_process[metric.name], n).text()} |",
        f"| dense `{result.dense_model}`, one process | {accuracy(dense, n).text()} |",
        "",
        f"DISCO minus dense: {round((disco - dense) * n):+d} of {n} images.",
        "",
    ]
    return lines


def _metric_table(config: FolderConfig, task: Task, result: EvalReport | None) -> list[str]:
    """Every metric of the task for each run (and the task's trivial floor), where the
    metric is not a count of right images (mIoU, PSNR): no binomial interval applies."""
    metrics = task.metrics
    head = ["", "| run | " + " | ".join(m.label for m in metrics) + " |", "|---|" + "---|" * len(metrics)]
    if result is None:
        values = [config.metrics.get(f"test_{m.name}") for m in metrics]
        return head + ["| this model, one process | " + " | ".join(m.format(v) if v is not None else "-"
                                                              for m, v in zip(metrics, values)) + " |", ""]
    acc = result.accuracy
    runs = [(f"DISCO, distributed over {result.nodes} processes", acc.disco), ("DISCO, one process",
            acc.disco_single_process), (f"dense `{result.dense_model}`, one process", acc.dense)]
    if acc.floor:
        runs.append(("trivial floor (the task's baseline answer)", acc.floor))
    lines = head + ["| " + label + " | " + " | ".join(m.format(run[m.name]) for m in metrics) + " |"
                    for label, run in runs]
    primary = task.primary_metric
    delta = acc.disco[primary.name] - acc.dense[primary.name]
    shown = f"{100 * delta:+.2f} points" if primary.percent else f"{delta:+.3f}{(' ' + primary.unit) if primary.unit else ''}"
    return lines + ["", f"DISCO minus dense, {primary.label}: {shown}.", ""]


def _speed_lines(result: EvalReport, plot_link: str) -> list[str]:
    lines = ["## Speed, and against what", "", BASELINES, ""]
    if not _sections(result):
        lines += [f"Latency not recorded yet (the result was measured with `--no-latency`); `disco-zoo eval "
                  f"{result.model} --out eval/results/{result.model}.json` on a quiet machine records it.", ""]
    for lat in _sections(result):
        size = f"{lat.input_size}x{lat.input_size}"
        lines += [f"At {size}, batch 1, one thread per process (one dense device: {lat.dense_single_ms:.1f} ms):", "",
                  "| link | DISCO (ms) | dense TP (ms) | speed-up vs dense TP | speed-up vs one dense device |",
                  "|---|---|---|---|---|"]
        lines += [f"| {row.where} | {row.disco_ms:.1f} | {row.dense_tp_ms:.1f} | {row.vs_dense_tp:.2f}x "
                  f"| {row.vs_one_device:.2f}x |" for row in speed_rows(lat)]
        check = break_even_check(lat, shared_cores(result.nodes, result.environment))
        lines += ["", f"Break-even at {size}: " + (check.text() if check else "not recorded (schema 1 result).") + ".", ""]
        own = link_programs_text(lat)
        if own:
            lines += [f"At {size}, {own}.", ""]
    programs = [lat.programs.source for lat in _sections(result) if lat.programs is not None]
    if programs:
        lines += [f"Cost-model programs: {programs[0]}.", "", f"![latency against bandwidth]({plot_link})", ""]
    env = result.environment
    lines += [f"Measured on {env.cpu} ({env.cores} cores), backend {env.backend}, torch {env.torch}, links emulated "
              "by the runtime (bandwidth only, no added latency).", ""]
    return lines


def _cost_lines(result: EvalReport) -> list[str]:
    lines = ["## Traffic, compute, memory", "", "| figure | " + " | ".join(
        f"{t.input_size}x{t.input_size}" for t in (result.at_input, result.at_paper_size) if t) + " |",
             "|---|" + "---|" * (2 if result.at_paper_size else 1)]
    sizes = [t for t in (result.at_input, result.at_paper_size) if t]
    lines.append("| bytes / inference, DISCO vs dense TP | " + " | ".join(
        f"{t.disco_bytes:,} vs {t.dense_tp_bytes:,} ({1 / t.traffic_ratio:.1f}x less)" for t in sizes) + " |")
    lines.append("| FLOPs per node, of dense | " + " | ".join(
        ", ".join(f"{f / t.flops_dense:.2f}" for f in t.flops_per_node) for t in sizes) + " |")
    lines += ["", f"Weights per node: {_mib(result.at_input.params_bytes_per_node)} MiB.", ""]
    return lines


def _preprocessing_lines(config: FolderConfig) -> list[str]:
    c, h, w = config.input_size
    size = "fixed" if config.fixed_input_size else "not fixed: other sizes run too"
    return [
        "## Preprocessing", "",
        f"- input: {c}x{h}x{w} ({size})",
        f"- normalise: mean {list(config.mean)}, std {list(config.std)}",
        f"- resize interpolation: {config.interpolation}; crop_pct {config.crop_pct:g}"
        + (" (no crop)" if config.crop_pct == 1.0 else ""),
        f"- in code: `disco_zoo.create_transform(\"{config.name}\")` (timm's data config: "
        f"`disco_zoo.data_config(\"{config.name}\")`)",
        "",
    ]


def _limits_lines(config: FolderConfig, facts: DatasetFacts) -> list[str]:
    lines = ["## Intended use and limits", "",
             "- For: studying and benchmarking distributed inference (DISCO's within-layer split) on small devices, "
             "and as a starting point to fine-tune.",
             f"- Not for: {facts.limits}"]
    if facts.test_images:
        lines.append(f"- The accuracy comes from {facts.test_images} test images: differences within the intervals "
                     "are noise.")
    if config.kind == "disco":
        lines.append("- Latency was measured on one shared machine with emulated links: it shows ratios and where "
                     "splitting pays, not any device's speed. Re-measure on your devices (`disco-zoo eval`).")
    return lines + [""]


def _run_lines(config: FolderConfig, variants: list[str]) -> list[str]:
    c, h, w = config.input_size
    lines = ["## How to run it", "", "```python", "import disco_zoo",
             f'model = disco_zoo.create_model("{config.name}", pretrained=True)'
             + ("  # every node in one process" if config.kind == "disco" else ""),
             "```", ""]
    if config.kind == "disco":
        args = json.dumps({"folder": f"hub/{config.name}", "input_shape": [1, c, h, w]})
        hosts = ",".join(f"h{k + 1}" for k in range(config.nodes))
        lines += [f"Distributed, one process per node ({config.nodes}); every rank reads only its own shard:", "",
                  "```python",
                  f'with disco_zoo.distributed("{config.name}") as model:  # one process per node, shards loaded once',
                  "    logits = model(batch)",
                  "```", "",
                  "```bash",
                  f"disco-zoo run {config.name} --backend mpi --bandwidth 100mbit   # this machine, emulated link",
                  f"disco-zoo eval {config.name}                                   # accuracy, traffic, latency",
                  f"mpiexec -hosts {hosts} -n {config.nodes} python -m disco_zoo.runtime.worker \\",
                  "    --entry disco_zoo.runtime.disco_executor:run_disco \\",
                  f"    --args '{args}'",
                  "```", ""]
    elif variants:
        lines += ["Distributed: its DISCO variants " + ", ".join(f"`{v}`" for v in variants) + ".", ""]
    return lines


def _licence_lines(config: FolderConfig) -> list[str]:
    own = "this folder's config" if config.license else "disco-zoo's licence"
    return ["## Licence", "", f"`{license_of(config)}` ({own}; the text is `LICENSE` in the disco-zoo repository root).",
            ""]


def _frontier_lines(frontier: Frontier) -> list[str]:
    return ["## Accuracy against traffic", "",
            f"`{frontier.arch}` sparsified to several traffic budgets (`eval/frontier/{frontier.arch}.json`; the "
            "table is in `MODEL_CARDS.md`):", "",
            f"![accuracy against traffic](../../eval/plots/{frontier_plot_name(frontier.arch)})", ""]


def render_folder_card(config: FolderConfig | dict[str, Any], result: EvalReport | None = None,
                       results_dir: Path = RESULTS_DIR, frontier_dir: Path = FRONTIER_DIR) -> str:
    """A hub folder's README.md: a Hugging Face model card (YAML front matter from
    :func:`card_data`) with what the config and the recorded result say."""
    from huggingface_hub import ModelCard

    if not isinstance(config, FolderConfig):
        config = FolderConfig.from_dict(config)
    recorded = results_dir / f"{config.name}.json"
    if result is None and config.kind == "disco" and recorded.is_file():
        result = EvalReport.read(recorded)
    task = task_of(config)
    facts = dataset_facts(config, result)
    variants = sorted(c.name for c in _published_configs(REPO_HUB) if c.dense == config.name)
    family = get_entry(config.arch).family
    what = (f"DISCO variant of `{config.dense}` ({family} family): every layer split across {config.nodes} nodes, "
            "trained so that each node needs only a learned subset of the others' channels."
            if config.kind == "disco" else f"Dense {family} model, the reference its DISCO variants are measured against.")
    lines = [
        f"# {config.name}", "",
        what + f" Architecture `{config.arch}` with arguments `{json.dumps(config.args, sort_keys=True)}`, stored as "
        f"{_STORED_AS.get(config.storage_dtype, config.storage_dtype)} safetensors.", "",
        *_accuracy_lines(config, task, result, facts),
    ]
    if result is not None:
        plot = f"../../eval/plots/{latency_plot_name(config.name)}"
        lines += [*_speed_lines(result, plot), *_cost_lines(result)]
    for frontier in (read_frontier(path) for path in frontier_files(frontier_dir)):
        if frontier.arch == config.arch:
            lines += _frontier_lines(frontier)
    lines += [*_preprocessing_lines(config), *_limits_lines(config, facts), *_run_lines(config, variants),
              *_licence_lines(config),
              f"Recipe: `{config.recipe}`", "",
              "Files (sha256 checked on every load): " + ", ".join(f"`{name}`" for name in config.file_names()), ""]
    body = "\n".join(lines)
    return str(ModelCard(f"---\n{card_data(config, result).to_yaml()}\n---\n\n{body}"))


# -- MODEL_CARDS.md -----------------------------------------------------------------------------


def _accuracy_row(config: FolderConfig, task: Task, result: EvalReport | None) -> str:
    facts = dataset_facts(config, result)
    family = get_entry(config.arch).family
    metric, n = task.primary_metric, facts.test_images

    def shown(value: float | None) -> str:
        if value is None:
            return "-"
        return accuracy(value, n).text() if metric.per_image and n else metric.format(value)

    if result is None:
        return f"| `{config.name}` | {family} | {config.nodes} | {shown(config.metrics.get(f'test_{metric.name}'))} | - | - | - | - |"
    at, name = result.at_input, metric.name
    mine, dense = shown(result.accuracy.disco[name]), shown(result.accuracy.dense[name])
    flops = " / ".join(f"{f / at.flops_dense:.2f}" for f in at.flops_per_node)
    return (f"| `{config.name}` | {family} | {result.nodes} | {mine} | {dense} | {1 / at.traffic_ratio:.1f}x "
            f"| {flops} | {_mib(at.params_bytes_per_node)} |")


def _speed_table(results: list[EvalReport]) -> list[str]:
    links = sorted({(link.bandwidth_bps, link.bandwidth) for r in results for lat in _sections(r) for link in lat.links})
    head = " | ".join(f"{name}: vs dense TP | {name}: vs one dense device" for _, name in links)
    lines = [f"| model | input | one dense device (ms) | {head} | localhost: vs one dense device "
             "| break-even bandwidth vs one dense device |",
             "|---|---|---|" + "---|---|" * len(links) + "---|---|"]
    for r in results:
        for lat in _sections(r):
            by_name = {row.where: row for row in speed_rows(lat)}
            cells = []
            for _, name in links:
                row = by_name.get(name)
                cells += ["-", "-"] if row is None else [f"{row.vs_dense_tp:.2f}x", f"{row.vs_one_device:.2f}x"]
            check = break_even_check(lat, shared_cores(r.nodes, r.environment))
            if check is None:
                even = "not recorded"
            elif check.bandwidth_bps is None:
                even = "never (slower even with an unlimited link)"
            else:
                even = bandwidth_text(check.bandwidth_bps) + (" (not checkable here: ranks shared cores)" if check.shared_cores
                                                              else "" if check.consistent else " (measured disagrees)")
            lines.append(f"| `{r.model}` | {lat.input_size}x{lat.input_size} | {lat.dense_single_ms:.1f} | "
                         + " | ".join(cells) + f" | {by_name['localhost'].vs_one_device:.2f}x | {even} |")
    return lines


def render_model_cards(results: dict[str, EvalReport] | None = None, hub_root: Path = REPO_HUB,
                       frontier_dir: Path = FRONTIER_DIR) -> str:
    """The whole MODEL_CARDS.md text."""
    results = load_results() if results is None else results
    configs = _published_configs(hub_root)
    lines = [
        "# Model cards",
        "",
        "Generated by `disco-zoo cards` from the registry, `hub/*/config.json` and `eval/results/*.json`; figures by "
        "`disco-zoo plots` (`eval/plots/`); do not edit by hand. Every figure was measured by the code (commands "
        "in `eval/recipes.sh`, `disco-zoo eval`). Each model's own card: `hub/<model>/README.md`.",
    ]
    by_task: dict[str, list[FolderConfig]] = {}
    for config in configs:
        by_task.setdefault(config.task, []).append(config)
    for kind, group in sorted(by_task.items()):
        task = task_of(group[0])
        facts = {dataset_facts(c, results.get(c.name)).description for c in group}
        label = task.primary_metric.label
        binomial = task.primary_metric.per_image
        intervals = ("Accuracies are shown with their 95% Wilson score interval; on "
                     + ", ".join(sorted({f"{f.test_images} images one image is {f.point_per_image:.2f} points"
                                         for f in (dataset_facts(c, results.get(c.name)) for c in group)
                                         if f.test_images})) + ".") if binomial else (
                     f"{label} is not a count of right images, so no binomial interval is shown; each card "
                     "lists every metric and the task's trivial floor.")
        shown_label = f"{label} [95%]" if binomial else label
        lines += [
            "", f"## {kind}: accuracy", "",
            *[f"Data: {d}." for d in sorted(facts)],
            intervals,
            "",
            f"| model | family | nodes | {shown_label} | dense {shown_label} | traffic vs dense TP "
            "| FLOPs per node (of dense) | weights per node (MiB) |",
            "|---|---|---|---|---|---|---|---|",
            *[_accuracy_row(c, task, results.get(c.name)) for c in group],
        ]
    timed = [results[c.name] for c in configs if c.name in results and _sections(results[c.name])]
    if timed:
        lines += ["", "## Speed-ups and their baselines", "", BASELINES,
                  "Batch 1, one thread per process, links emulated (bandwidth only). The break-even is where the "
                  "model of time (`disco_zoo/timing/`) puts DISCO's latency equal to one dense device's measured one; "
                  "each card checks it against the measured links.", "",
                  *_speed_table(timed), "", "### Latency against bandwidth", ""]
        lines += [f"![{r.model}](eval/plots/{latency_plot_name(r.model)})" for r in timed
                  if all(lat.programs is not None for lat in _sections(r))]
    frontiers = [read_frontier(path) for path in frontier_files(frontier_dir)]
    if frontiers:
        lines += ["", "## Accuracy against traffic", ""]
        for f in frontiers:
            lines += [f"![{f.arch}](eval/plots/{frontier_plot_name(f.arch)})", "",
                      "| budget | traffic vs dense TP | top-1 [95%] | FLOPs (of dense) | max node params (of dense) "
                      "| folder |",
                      "|---|---|---|---|---|---|",
                      *[f"| {p.budget:g} | {1 / p.traffic_ratio:.1f}x less | {p.top1:.2%} [{p.top1_low:.1%}, "
                        f"{p.top1_high:.1%}] | {p.flops_ratio:.2f} | {p.max_node_params_ratio:.2f} | `{p.folder}` |"
                        for p in f.points],
                      "", f"Dense `{f.dense_model}`: {accuracy(f.dense_top1, f.n_test).text()}.", ""]
    lines += ["", "## Licence", "", "Code and weights: the licence in `LICENSE` (each card names it, from its config "
              "or the package's metadata).", "",
              "Environment of each recorded result: `eval/results/<model>.json` (`environment`).", ""]
    return "\n".join(lines)


def write_cards(check: bool = False) -> list[Path]:
    """Write (or, with ``check``, list the stale) MODEL_CARDS.md and hub READMEs."""
    results = load_results()
    wanted = {CARDS_FILE: render_model_cards(results)}
    for config in _published_configs(REPO_HUB):
        wanted[REPO_HUB / config.name / "README.md"] = render_folder_card(config, results.get(config.name))
    stale = [path for path, text in wanted.items() if not path.is_file() or path.read_text() != text]
    if not check:
        for path in stale:
            path.write_text(wanted[path])
    return stale
