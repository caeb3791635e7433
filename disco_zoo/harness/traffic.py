"""Traffic: the accounting of one inference, and the bytes the runtime puts on the wire.

The accounting (:func:`disco_zoo.disco.accounting.disco_accounting`) predicts every
ordered pair's bytes: the layer exchanges, and apart from them rank 0's image scatter
(tag ``"input"``). One batch-1 distributed inference is counted by the transport; its
bytes, less the predicted scatter, must equal the layer exchanges pair by pair, and the
bytes under the ``"input"`` tag the predicted scatter (the tests and CI check both).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from disco_zoo.disco.accounting import DiscoAccounting, disco_accounting
from disco_zoo.harness.options import EvalOptions
from disco_zoo.harness.report import Pairs, TrafficFigures
from disco_zoo.harness.runs import run_inference
from disco_zoo.runtime.disco_executor import INPUT_TAG

__all__ = ["account", "figures", "count_on_the_wire"]


def account(model: nn.Module, input_shape: tuple[int, ...]) -> DiscoAccounting:
    """The accounting of one inference of ``input_shape`` (1, C, H, W)."""
    return disco_accounting(model, tuple(input_shape))


def figures(acc: DiscoAccounting) -> TrafficFigures:
    """The accounting as the report records it (no wire measurement)."""
    return TrafficFigures(
        input_size=acc.input_shape[-1],
        disco_bytes=acc.disco_bytes,
        dense_tp_bytes=acc.dense_tp_bytes,
        traffic_ratio=acc.traffic_ratio,
        bytes_per_pair=dict(sorted(acc.bytes_per_pair.items())),
        flops_dense=acc.flops_dense,
        flops_total=acc.flops_total,
        flops_per_node=list(acc.flops_per_node),
        params_per_node=list(acc.params_per_node),
        params_dense=acc.params_dense,
        params_bytes_per_node=list(acc.params_bytes_per_node),
        act_peak_per_node=list(acc.act_peak_per_node),
    )


def _without(counted: Pairs, taken: Pairs) -> Pairs:
    """``counted`` less ``taken`` per pair, pairs left at zero dropped."""
    left = {pair: count - taken.get(pair, 0) for pair, count in counted.items()}
    return {pair: count for pair, count in sorted(left.items()) if count}


def count_on_the_wire(folder: Path, nodes: int, acc: DiscoAccounting, opts: EvalOptions) -> TrafficFigures:
    """:func:`figures` plus one batch-1 distributed inference's counted bytes, the image
    scatter (as the accounting predicts it) reported apart from the layer exchanges."""
    run = run_inference(folder, nodes, list(acc.input_shape), opts)
    return dataclasses.replace(
        figures(acc),
        measured_bytes_per_pair=_without(run.bytes["pairs"], acc.input_bytes_per_pair),
        input_scatter_bytes=run.bytes["tags"].get(INPUT_TAG, 0),
        input_scatter_bytes_expected=sum(acc.input_bytes_per_pair.values()),
    )
