"""Execution units: halos, merges, forwarding tables, and row-sliced compute == full compute."""
from __future__ import annotations

import random

import pytest
import torch
import torch.fx
from torch import nn

from disco_zoo.graph import trace_model
from disco_zoo.planner.lp import ranges_from_counts
from disco_zoo.planner.rows import compute_unit
from disco_zoo.planner.units import build_units, extent, input_rows, splittable

from helpers import Branchy


def _full_values(graph, x):
    values = {}

    class Rec(torch.fx.Interpreter):
        def run_node(self, n):
            values[n.name] = super().run_node(n)
            return values[n.name]

    with torch.no_grad():
        Rec(graph.graph_module).run(x)
    return values


def test_conv_halo_rows() -> None:
    g = trace_model(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1)), (1, 3, 16, 16))
    conv = g.of_op("conv")[0]
    assert extent(conv) == 8
    assert input_rows(conv, 0, (2, 4)) == (3, 8)  # rows 2,3 read input rows 3..7
    assert input_rows(conv, 0, (0, 1)) == (0, 2)  # top padding clipped
    assert input_rows(conv, 0, (7, 8)) == (13, 16)  # bottom row clipped to the input


def test_whole_layers_and_merges() -> None:
    g = trace_model(Branchy(), (1, 3, 16, 16))
    kinds = {l.op: splittable(l) for l in g}
    assert kinds["conv"] and kinds["add"] and kinds["concat"]
    assert not splittable(g.of_op("linear")[0]) and not splittable(g.of_op("flatten")[0])
    add = g.of_op("add")[0]
    assert all(input_rows(add, k, (3, 7)) == (3, 7) for k in range(2))
    head = g.of_op("linear")[0]
    assert extent(head) == 1 and input_rows(head, 0, (0, 1)) == (0, 1)


def test_forwarding_table_matches_requirements() -> None:
    g = trace_model(Branchy(), (1, 3, 16, 16))
    placement = {l.name: ranges_from_counts([extent(l) // 2, extent(l) - extent(l) // 2] if splittable(l)
                                            else [extent(l), 0]) for l in g}
    units = build_units(g, placement)
    sent = sorted((f.layer, f.device, tuple(f.rows), f.bytes) for u in units for f in u.forward)
    needed = sorted((u.layer, u.device, tuple(s.rows), s.bytes) for u in units for r in u.inputs for s in r.sources)
    assert sent == needed and any(b > 0 for *_, b in sent)


@pytest.mark.parametrize("seed", range(4))
def test_row_sliced_compute_equals_full(seed: int) -> None:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    net = Branchy(k1=rng.choice([3, 5]), s1=rng.choice([1, 2]), k2=3, d2=rng.choice([1, 2]), pool=rng.choice([2, 3]))
    net.eval()
    size = rng.choice([15, 16, 21])
    g = trace_model(net, (1, 3, size, size))
    x = torch.randn(1, 3, size, size)
    full = _full_values(g, x)
    checked = 0
    for layer in g:
        if layer.op in ("input", "output"):
            continue
        h = extent(layer)
        a = rng.randrange(h)
        rows = (a, rng.randint(a + 1, h)) if splittable(layer) else (0, h)
        inputs = []
        for k, pred in enumerate(layer.predecessors):
            lo, hi = input_rows(layer, k, rows)
            t = full[pred]
            inputs.append((t[:, :, lo:hi] if t.dim() == 4 else t, lo if t.dim() == 4 else 0))
        with torch.no_grad():
            got = compute_unit(g, layer, rows, inputs)
        want = full[layer.name]
        want = want[:, :, rows[0]:rows[1]] if want.dim() == 4 else want
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        checked += 1
    assert checked >= 8
