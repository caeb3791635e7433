"""`disco-zoo export --format onnx`: per-node ONNX segments + a program whose messages are
the torch executor's, and an onnx engine whose outputs and bytes equal the torch one's."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
import torch

from helpers import (
    DISCO_SHAPE, ONNX_ENTRY, TORCH_NODE_ENTRY, LoopbackBackend, LoopbackHub, expected_disco_bytes,
    exported_tiny_disco, run_nodes,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return exported_tiny_disco(tmp_path_factory.mktemp("onnx"))


def test_every_node_folder_is_self_contained_and_hashed(tiny):
    folder, _, part, out, _ = tiny
    source = json.loads((folder / "config.json").read_text())
    for k in range(part.nodes):
        node = out / f"node{k}"
        sums = dict(reversed(line.split("  ")) for line in (node / "SHA256SUMS").read_text().splitlines())
        assert set(sums) == {p.name for p in node.iterdir()} - {"SHA256SUMS"}  # every file, config.json too
        for name, digest in sums.items():
            assert hashlib.sha256((node / name).read_bytes()).hexdigest() == digest
        program = json.loads((node / "program.json").read_text())
        assert program["node"] == k and program["input_shape"] == DISCO_SHAPE
        shard = next(f for f in source["files"] if f["name"] == f"node{k}.safetensors")
        assert program["shard"]["sha256"] == shard["sha256"]
        for seg in program["segments"]:
            model = onnx.load(str(node / seg["file"]))
            onnx.checker.check_model(model, full_check=True)
            assert [i.name for i in model.graph.output] == seg["outputs"]
        # steps alternate between compute and exchanges; no two segments in a row
        kinds = [s["op"] for s in program["steps"]]
        assert all(a != b or a == "exchange" for a, b in zip(kinds, kinds[1:]))


class _Recording:
    """Wraps a runtime Transport: records (peer, tag, shape, direction) of every message, in order."""

    def __init__(self, inner) -> None:
        self.inner, self.log = inner, []
        self.rank, self.world_size = inner.rank, inner.world_size

    def isend(self, tensor, dst, tag):
        self.log.append(("send", dst, tag, list(tensor.shape)))
        return self.inner.isend(tensor, dst, tag)

    def irecv(self, shape, dtype, src, tag):
        self.log.append(("recv", src, tag, list(shape)))
        return self.inner.irecv(shape, dtype, src, tag)

    def send(self, tensor, dst, tag):
        self.isend(tensor, dst, tag).wait()

    def recv(self, shape, dtype, src, tag):
        return self.irecv(shape, dtype, src, tag).wait()


def test_program_schedule_is_the_torch_executors(tiny):
    """Message for message (direction, peer, tag, shape, order), the program posts what the
    torch executor's node posts when it runs."""
    from disco_zoo.runtime.disco_executor import build_node_model, scatter_input
    from disco_zoo.runtime.transport import Transport

    folder, _, part, out, _ = tiny
    hub = LoopbackHub()
    x = torch.randn(DISCO_SHAPE)

    def node(k):
        t = _Recording(Transport(LoopbackBackend(hub, k, 2), timeout_s=30))
        model, p = build_node_model(folder, t)
        with torch.no_grad():
            model(scatter_input(t, x if k == 0 else None, next(iter(p.layers.values())), DISCO_SHAPE))
        return t.log

    logs = run_nodes(node, 2)
    for k in range(2):
        program = json.loads((out / f"node{k}" / "program.json").read_text())
        posted = []
        for step in (s for s in program["steps"] if s["op"] == "exchange"):
            posted += [("recv", r["peer"], r["tag"], r["shape"]) for r in step["recvs"]]
            posted += [("send", s["peer"], s["tag"], s["shape"]) for s in step["sends"]]
        assert posted == logs[k]


@pytest.mark.parametrize("engines, wire, emulated", [(("onnx", "onnx"), "fp32", False), (("torch", "onnx"), "fp32", True),
                                                     (("onnx", "onnx"), "fp16", False)])
def test_onnx_engine_equals_torch_and_accounting(tiny, engines, wire, emulated):
    """Outputs equal the masked model's (1e-4 in fp32), bytes per tag and pair equal the
    accounting's, and the onnx ranks never imported torch; torch and onnx ranks mix (over
    an emulated link too: the onnx rank sends and expects the torch transport's stamps)."""
    from disco_zoo.runtime.session import run_entry, seeded_input
    from disco_zoo.timing.links import Link

    folder, model, part, out, x_path = tiny
    with torch.no_grad():
        ref = model(seeded_input(DISCO_SHAPE, 0))
    entries = [ONNX_ENTRY if e == "onnx" else TORCH_NODE_ENTRY for e in engines]
    run = run_entry(entries, 2, "mpi", timeout_s=30, wire_dtype=wire,
                    link=Link(bandwidth_bps=1e9, latency_s=1e-4) if emulated else None, args={"folder": str(folder), "program": str(out), "input_shape": DISCO_SHAPE,
                          "input_path": str(x_path)})
    tolerance = 1e-4 if wire == "fp32" else 5e-2 * ref.abs().max().item()
    assert (run.output - ref).abs().max().item() <= tolerance
    tags, pairs = expected_disco_bytes(model, part, DISCO_SHAPE, 4 if wire == "fp32" else 2)
    assert run.bytes["tags"] == tags
    assert run.bytes["pairs"] == pairs
    assert [r["engine"] for r in run.per_rank] == list(engines)
    assert [r["torch_imported"] for r in run.per_rank if r["engine"] == "onnx"] == [False] * engines.count("onnx")


def test_export_refuses_a_dense_folder(tmp_path):
    from disco_zoo.errors import DiscoZooError
    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.hub import resolve_folder

    with pytest.raises(DiscoZooError, match="holds a dense model; export takes a DISCO folder"):
        export_onnx(resolve_folder("resnet18.digits"), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_cli_export_then_run_engines(tiny, tmp_path):
    """`export` writes what `run --engine onnx` and `--engine torch,onnx` run; same logits as torch."""
    from typer.testing import CliRunner

    from disco_zoo.cli import app

    folder = tiny[0]
    cli = CliRunner()
    res = cli.invoke(app, ["export", str(folder), "--format", "onnx", "--out", str(tmp_path / "e"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["nodes"] == [str(tmp_path / "e" / f"node{k}") for k in range(2)]
    reports = {}
    for engine in ("torch", "onnx", "torch,onnx"):
        res = cli.invoke(app, ["run", str(folder), "--engine", engine, "--json"])
        assert res.exit_code == 0, res.output
        reports[engine] = json.loads(res.stdout)
    for engine in ("onnx", "torch,onnx"):
        assert reports[engine]["bytes_per_pair"] == reports["torch"]["bytes_per_pair"]
        for a, b in zip(reports[engine]["top5"], reports["torch"]["top5"]):
            assert a["class"] == b["class"] and abs(a["logit"] - b["logit"]) <= 1e-4
    assert [r["engine"] for r in reports["torch,onnx"]["ranks"]] == ["torch", "onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18_disco_2node.digits", "resnet50_disco_2node.digits",
                                  "vit_tiny_disco_2node.digits", "swin_micro_disco_2node.digits"])
def test_published_models_onnx_equals_torch(name):
    """The published 2-node models: onnx engine logits == torch engine's (1e-4), same bytes per pair."""
    from disco_zoo.commands.run import run_report

    torch_run, onnx_run = run_report(name, engine="torch"), run_report(name, engine="onnx")
    assert onnx_run["bytes_per_pair"] == torch_run["bytes_per_pair"]
    for a, b in zip(onnx_run["top5"], torch_run["top5"]):
        assert a["class"] == b["class"] and abs(a["logit"] - b["logit"]) <= 1e-4
    assert all(not r["engine"] == "torch" for r in onnx_run["ranks"])


def _as_dict(output):
    """A model output as {key: tensor} (segmenters return torchvision's dict, SR nets a tensor)."""
    return dict(output) if isinstance(output, dict) else {"": output}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deeplabv3_resnet18_disco_2node.digit_canvas",
                                  "lraspp_mobilenet_v3_large_disco_2node.digit_canvas",
                                  "edsr_baseline_x2_disco_2node.photos", "espcn_x2_disco_2node.photos"])
def test_published_dense_prediction_models_onnx_equals_torch(name):
    """The segmentation and SR 2-node models: the onnx engine's whole spatial output (the
    gathered last layer) == the torch engine's within 1e-4, and the same bytes per pair."""
    from disco_zoo.commands.run import run_report

    torch_run = run_report(name, engine="torch", keep_output=True)
    for engine in ("onnx", "torch,onnx"):
        run = run_report(name, engine=engine, keep_output=True)
        assert run["bytes_per_pair"] == torch_run["bytes_per_pair"]
        got, want = _as_dict(run["output"]), _as_dict(torch_run["output"])
        assert got.keys() == want.keys(), engine
        for key in want:
            assert got[key].shape == want[key].shape and want[key].dim() == 4, (engine, key)
            assert torch.allclose(got[key], want[key], atol=1e-4, rtol=0), (engine, key)
        assert [r["engine"] for r in run["ranks"]] == engine.split(",") * (2 // len(engine.split(",")))


@pytest.mark.slow
def test_eval_engine_onnx_reproduces_the_recorded_accuracy():
    """`eval --engine onnx`: the distributed accuracy run on onnxruntime ranks scores what
    the folder's config records (every published DISCO model was checked so by hand)."""
    from typer.testing import CliRunner

    from disco_zoo.cli import app
    from disco_zoo.hub import resolve_folder
    from disco_zoo.store import load_folder_config

    name = "resnet18_disco_2node.digits"
    res = CliRunner().invoke(app, ["eval", name, "--engine", "onnx", "--no-latency", "--paper-size", "0", "--json"])
    assert res.exit_code == 0, res.output
    recorded = load_folder_config(resolve_folder(name)).metrics["test_top1"]
    assert json.loads(res.stdout)["accuracy"]["disco_top1"] == pytest.approx(recorded, abs=1e-9)


def test_cli_export_refuses_bad_arguments(tmp_path):
    from typer.testing import CliRunner

    from disco_zoo.cli import app

    cli = CliRunner()
    (tmp_path / "file").write_text("x")
    res = cli.invoke(app, ["export", "resnet18-disco-2node", "--out", str(tmp_path / "file")])
    assert res.exit_code != 0 and "is a file; give a folder path" in str(res.exception)
    res = cli.invoke(app, ["export", "resnet18-disco-2node", "--format", "tflite", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "tflite" in res.output
    res = cli.invoke(app, ["run", "resnet18-disco-2node", "--engine", "onnx,tpu"])
    assert res.exit_code != 0 and "give torch, onnx, or one of them per rank" in str(res.exception)


def test_batch_norm_after_a_sum_of_convs_is_folded_into_them():
    """bn(conv(a) + conv(b)) (a DISCO layer's own and received halves) becomes two convs
    and an add computing the same, so no standalone batch norm is left to run."""
    from disco_zoo.export.fold import fold_sum_batch_norms

    class Layer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.own, self.peer = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False), torch.nn.Conv2d(5, 16, 1)
            self.bn = torch.nn.BatchNorm2d(16)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(self.own(a) + self.peer(b)))

    torch.manual_seed(0)
    layer = Layer().eval()
    layer.bn.running_mean.normal_()
    layer.bn.running_var.uniform_(0.5, 2.0)
    layer.bn.weight.data.normal_()
    inputs = (torch.randn(1, 8, 6, 6), torch.randn(1, 5, 6, 6))
    gm = torch.export.export(layer, inputs).module()
    with torch.no_grad():
        ref = gm(*inputs)
        assert fold_sum_batch_norms(gm) == 1
        assert not any(n.target is torch.ops.aten.batch_norm.default for n in gm.graph.nodes)
        assert (gm(*inputs) - ref).abs().max().item() <= 1e-5


def test_a_segment_before_an_exchange_computes_only_what_its_sends_need(tiny):
    """The executor posts a layer's sends before it convolves its own channels; the
    program must not hold the sends back behind that conv (it belongs to the next
    segment, with the conv of the received channels)."""
    _, _, part, out, _ = tiny
    checked = 0
    for k in range(part.nodes):
        node = out / f"node{k}"
        program = json.loads((node / "program.json").read_text())
        steps = program["steps"]
        for step, following in zip(steps, steps[1:]):
            if step["op"] != "segment" or following["op"] != "exchange":
                continue
            graph = onnx.load(str(node / program["segments"][step["index"]]["file"])).graph
            producer = {name: n for n in graph.node for name in n.output}
            needed, todo = set(), [s["value"] for s in following["sends"]]
            while todo:
                n = producer.get(todo.pop())
                if n is not None and id(n) not in needed:
                    needed.add(id(n))
                    todo += list(n.input)
            extra = [n.op_type for n in graph.node if id(n) not in needed and n.op_type != "Constant"]
            assert not extra, f"node {k} segment {step['index']} computes {extra} before its sends"
            checked += 1
    assert checked
