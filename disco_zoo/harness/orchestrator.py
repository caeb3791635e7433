"""The orchestrator: one pretrained DISCO model against its dense counterpart, measured.

Every figure comes from running code (the jobs are modules of their own):
- accuracy (:mod:`~disco_zoo.harness.accuracy`): the task's eval split through real
  N-process distributed inference, the dense model and the DISCO model in one process,
  scored by the task's metric;
- traffic, FLOPs, params, activation memory (:mod:`~disco_zoo.harness.traffic`): the
  accounting, with one inference's bytes counted on the wire next to it;
- latency (:mod:`~disco_zoo.harness.latency`): interleaved rounds on localhost and
  through emulated links.
What the model is comes from its folder's config alone: its task, its input size, its
dense counterpart (``dense``), and whether its input size is fixed; a model whose size
is not fixed is also accounted and timed at ``opts.paper_size`` (by default the task's
``deployment_size``: the DISCO paper's 224 for classification, 512 for segmentation),
where a slow link is timed once (dense ResNet-50 parallelism at 10 Mbit/s takes ~17 s
per inference). A model whose pre-processing resizes to the size it was built for (a
detector's transform) is run at the paper size there, by the accounting and the runtime
themselves (:func:`disco_zoo.graph.stages.set_input_shape`): nothing here knows which.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from disco_zoo.errors import DiscoZooError
from disco_zoo.harness.accuracy import measure_accuracy
from disco_zoo.harness.environment import environment
from disco_zoo.harness.latency import dense_tp_copy, load_dense_measured, measure_latencies
from disco_zoo.harness.options import EvalOptions
from disco_zoo.harness.report import EvalReport, LatencyResult
from disco_zoo.harness.traffic import account, count_on_the_wire, figures
from disco_zoo.hub import get_pretrained_cfg, load_folder, resolve_folder
from disco_zoo.runtime.lifetime import temporary_directory
from disco_zoo.store import CONFIG_NAME
from disco_zoo.tasks import task_of

__all__ = ["evaluate"]


def evaluate(name: str, opts: EvalOptions = EvalOptions(), progress: Callable[[str], None] = lambda _: None) -> EvalReport:
    """Measure ``name`` (a pretrained DISCO model, by name or folder) and its dense
    counterpart (looked up beside the DISCO folder first, then in the stores)."""
    folder = resolve_folder(name)
    config = get_pretrained_cfg(str(folder))
    if config.kind != "disco":
        raise DiscoZooError(f"{config.name} is a dense model; eval measures a DISCO model against its dense "
                            "counterpart (see `disco-zoo list --pretrained` for the DISCO ones).")
    if not config.dense:
        raise DiscoZooError(f"{folder / CONFIG_NAME} names no dense counterpart (field 'dense', e.g. "
                            f"'{config.arch}.{config.tag}' of the dense model); rebuild it with `disco-zoo sparsify --init`.")
    task = task_of(config)
    nodes = config.nodes
    shape = [1, *config.input_size]
    paper_size = task.deployment_size if opts.paper_size is None else opts.paper_size
    paper_shape = [1, config.input_size[0], paper_size, paper_size]
    resizable = bool(paper_size) and not config.fixed_input_size

    progress("loading models")
    dense_folder = str(resolve_folder(config.dense, near=folder.parent))
    dense, dense_load_growth = load_dense_measured(dense_folder)
    model = load_folder(folder)
    split = task.eval_split(opts.data or task.embedded_dataset, config)

    progress(f"distributed inference over {len(split)} inputs on {nodes} ranks")
    accuracy = measure_accuracy(task, split, folder, nodes, model, dense, opts)
    progress("accounting, and bytes counted on the wire for one inference")
    at_input = count_on_the_wire(folder, nodes, account(model, tuple(shape)), opts)
    at_paper_size = None
    if resizable:
        progress(f"accounting at {paper_size}x{paper_size}")
        at_paper_size = figures(account(model, tuple(paper_shape)))

    latency: LatencyResult | None = None
    latency_paper_size: LatencyResult | None = None
    if opts.latency:
        with temporary_directory(prefix="disco-zoo-eval-") as tmp:
            dense_tp_folder = dense_tp_copy(model, folder, Path(tmp) / "dense_tp")
            latency = measure_latencies(folder, dense_tp_folder, dense_folder, nodes, shape, opts, progress,
                                        link_warmup=1, link_repeats=max(2, opts.repeats // 2),
                                        dense_rss_load_growth_bytes=dense_load_growth)
            if resizable:
                # Slow links at the paper size take seconds per inference: those get one
                # timed round after none warm (quick links still get opts.repeats rounds).
                latency_paper_size = measure_latencies(folder, dense_tp_folder, dense_folder, nodes, paper_shape,
                                                       opts, progress, link_warmup=0, link_repeats=1)
    return EvalReport(
        model=config.name,
        dense_model=config.dense,
        nodes=nodes,
        dataset=split.source,
        accuracy=accuracy,
        at_input=at_input,
        at_paper_size=at_paper_size,
        latency=latency,
        latency_paper_size=latency_paper_size,
        environment=environment(opts.backend),
    )
