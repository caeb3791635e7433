"""The DISCO FCOS detector end to end: torchvision's FCOS in stages (transform | backbone +
FPN + heads | anchors, box decoding, NMS), its core split across nodes, the stages on the
root; masked model, loopback and real-rank runs, sparsify and eval."""
import copy
import json
from pathlib import Path

import pytest
import torch
from torchvision.models.detection.fcos import FCOS
from typer.testing import CliRunner

from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.stages import at_input_shape, core_input_shape, core_of, has_stages
from disco_zoo.registry import build_model, get_entry
from disco_zoo.runtime.session import seeded_input
from disco_zoo.runtime.transport import Transport
from helpers import (LoopbackBackend, LoopbackHub, LoopbackNodes, detections_masks_open_and_closed, expected_disco_bytes,
                     graph_disco_folder, run_nodes)

SIDE = 64
# score_thresh 0: an untrained detector's scores are all under torchvision's 0.2, and an
# empty list of boxes would compare equal to anything
ARGS = {"min_size": SIDE, "max_size": SIDE, "score_thresh": 0.0}
HEADS = {"head.classification_head.cls_logits", "head.regression_head.bbox_reg", "head.regression_head.bbox_ctrness"}


def _images(count: int = 2, side: int = SIDE) -> torch.Tensor:
    return torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(1))


def _max_box_gap(got, want) -> float:
    """The largest difference of boxes and scores between two detection lists (their
    labels and counts must agree, or the gap is infinite). Detections scoring within 1e-5
    of the lower of the two lists' last kept scores are left out: at torchvision's top-k
    cut (100 per image) scores that tie to float rounding may keep either detection."""
    gap = 0.0
    for a, b in zip(got, want, strict=True):
        if len(a["scores"]) and len(b["scores"]):
            cut = max(a["scores"].min().item(), b["scores"].min().item()) + 1e-5
            a, b = ({k: v[d["scores"] > cut] for k, v in d.items()} for d in (a, b))
        if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
            return float("inf")
        gap = max(gap, (a["boxes"] - b["boxes"]).abs().max().item(), (a["scores"] - b["scores"]).abs().max().item())
    return gap


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return build_model("fcos_resnet18_fpn", **ARGS).eval()


def test_the_staged_forward_is_torchvisions_fcos(dense):
    """Eval: the same detections as FCOS.forward; train: the same losses (on 80-pixel
    images, which the transform resizes to 64 and the boxes are mapped back from)."""
    x = _images(side=80)
    with torch.no_grad():
        got, want = dense(x), FCOS.forward(dense, list(x))
    assert [len(d["boxes"]) for d in got] == [100, 100] and _max_box_gap(got, want) == 0.0
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([3])}] * 2
    dense.train()
    try:
        torch.manual_seed(0)
        losses = dense(list(x), targets)
        torch.manual_seed(0)
        reference = FCOS.forward(dense, list(x), targets)
    finally:
        dense.eval()
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert all(torch.allclose(losses[k], reference[k]) for k in losses)


def test_bad_targets_are_one_clear_error(dense):
    dense.train()
    try:
        with pytest.raises(DiscoZooError, match=r"box without area \[4.0, 6.0, 4.0, 40.0\]"):
            dense([torch.rand(3, SIDE, SIDE)], [{"boxes": torch.tensor([[4.0, 6.0, 4.0, 40.0]]),
                                                 "labels": torch.tensor([1])}])
        with pytest.raises(DiscoZooError, match="needs targets"):
            dense([torch.rand(3, SIDE, SIDE)])
    finally:
        dense.eval()


def test_the_variants_split_the_core_and_keep_the_stages_on_the_root():
    for nodes in (2, 4):
        entry = get_entry(f"fcos_resnet18_fpn_disco_{nodes}node")
        assert entry.task == "detection" and entry.kwargs == {"dense": "fcos_resnet18_fpn", "nodes": nodes}
    torch.manual_seed(0)
    model = build_model("fcos_resnet18_fpn_disco_2node", **ARGS)
    part = model.disco_partition
    assert has_stages(model) and isinstance(model, FCOS)
    # ResNet-18 layers 1-3 (15 convs), the FPN's 2 lateral and 2 output convs, the heads' 2 x 4 tower convs
    # and 3 predictors
    assert len(part.layers) == 30 and part.outputs == []  # the heads reduce on the root: nothing to gather
    shared = {n for n, l in part.layers.items() if l.calls == 2}  # the heads run on both pyramid levels
    assert len(shared) == 11 and {n for n, l in part.layers.items() if l.mode == "reduce"} == HEADS <= shared
    assert next(iter(part.layers)) == "backbone.body.conv1"  # the first split layer reads the transformed image
    # the core runs on what the transform makes of the run's size: a run at 80 pixels (the
    # 64-pixel model configured for 80) pads to the strides' multiple of 32
    assert core_input_shape(model, (1, 3, SIDE, SIDE)) == (1, 3, SIDE, SIDE)
    assert core_input_shape(model, (1, 3, 80, 80)) == (1, 3, 96, 96)
    assert set(dict(core_of(model).named_modules())) <= set(dict(model.named_modules()))


def test_masks_open_give_the_dense_detections(dense):
    want, got, closed = detections_masks_open_and_closed(dense, _images())
    assert _max_box_gap(got, want) <= 1e-4
    assert _max_box_gap(closed, want) > 1e-2


def _loopback(folder, part, nodes: int, shape: list[int], x: torch.Tensor) -> tuple[list, dict]:
    return LoopbackNodes(folder, nodes, timeout_s=60)(part, shape, x)


@pytest.mark.parametrize("nodes, side", [(2, SIDE), (2, 80), (4, SIDE)])
def test_nodes_give_the_masked_models_detections(tmp_path, nodes, side):
    """Rank 0 transforms the image, scatters the core's input, and decodes the boxes from
    the heads' outputs reduced on it: the masked model's detections; every byte on the
    wire is the accounting's (a run at 80 pixels runs the 64-pixel model at 80: its
    transform is configured for 80, the core's input padded to 96)."""
    folder, model, part = graph_disco_folder(tmp_path, "fcos_resnet18_fpn", nodes, args=ARGS)
    shape = [2, 3, side, side]
    x = seeded_input(shape, 0).clamp(0, 1)
    with torch.no_grad(), at_input_shape(model, shape):
        want = model(x)
    outs, counted = _loopback(folder, part, nodes, shape, x)
    assert isinstance(outs[0], list) and [len(d["boxes"]) for d in outs[0]] == [100, 100]
    assert _max_box_gap(outs[0], want) <= 1e-4
    assert isinstance(outs[1], tuple)  # the other ranks end with their core's partial outputs
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert counted["tags"] == tags and counted["pairs"] == pairs
    assert {f"{h}@1" for h in HEADS} <= set(tags)  # the heads' outputs reach the root at every level
    acc = disco_accounting(model, tuple(shape))
    assert sum(counted["pairs"].values()) == acc.disco_bytes + sum(acc.input_bytes_per_pair.values())


def test_a_detector_accounted_and_run_at_another_size_is_that_sizes(tmp_path):
    """Built at 64 (its canvas), accounted and run at 96 (a deployment size): the figures
    and the detections of the same detector built at 96, every byte on the wire the
    accounting's; the model itself still resizes to 64 after it was accounted."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    folder, model, part = graph_disco_folder(tmp_path / "a", "fcos_resnet18_fpn", 2, args=ARGS)
    _, built, _ = graph_disco_folder(tmp_path / "b", "fcos_resnet18_fpn", 2, args={**ARGS, "min_size": 96,
                                                                                     "max_size": 96})
    shape = [1, 3, 96, 96]
    acc, want = disco_accounting(model, tuple(shape)), disco_accounting(built, tuple(shape))
    assert acc.input_bytes_per_pair == want.input_bytes_per_pair == {(0, 1): 96 * 96 * 4}
    assert (acc.disco_bytes, acc.dense_tp_bytes, acc.bytes_per_pair, acc.bytes_per_layer, acc.flops_per_node,
            acc.act_peak_per_node) == (want.disco_bytes, want.dense_tp_bytes, want.bytes_per_pair,
                                       want.bytes_per_layer, want.flops_per_node, want.act_peak_per_node)
    at_canvas = disco_accounting(model, (1, 3, SIDE, SIDE))
    assert at_canvas.disco_bytes < acc.disco_bytes and at_canvas.flops_dense < acc.flops_dense
    assert core_input_shape(model, shape) == tuple(shape)
    assert model.transform.min_size == (SIDE,) and model.transform.max_size == SIDE  # as it was built
    assert core_input_shape(model, (1, 3, SIDE, SIDE)) == (1, 3, SIDE, SIDE)

    x = seeded_input(shape, 0).clamp(0, 1)
    with torch.no_grad():
        reference = built(x)
    outs, counted = _loopback(folder, part, 2, shape, x)
    assert _max_box_gap(outs[0], reference) <= 1e-4
    assert sum(counted["pairs"].values()) == acc.disco_bytes + sum(acc.input_bytes_per_pair.values())
    assert (counted["tags"], counted["pairs"]) == expected_disco_bytes(built, part, shape)


def test_the_dense_baseline_is_timed_at_the_size_disco_runs_at(tmp_path, monkeypatch):
    """The latency rounds at 96 time the dense detector (built at 64) at 96 too, not at the
    size it would resize to."""
    import disco_zoo.runtime.rounds as rounds

    folder, _, _ = graph_disco_folder(tmp_path, "fcos_resnet18_fpn", 2, args=ARGS)
    torch.manual_seed(0)
    dense = build_model("fcos_resnet18_fpn", **ARGS).eval()
    seen = []
    monkeypatch.setattr(rounds, "build_dense", lambda name: dense)
    monkeypatch.setattr(dense, "forward", lambda x: seen.append((tuple(x.shape), dense.transform.min_size)))
    hub = LoopbackHub()
    transports = [Transport(LoopbackBackend(hub, k, 2), timeout_s=60) for k in range(2)]
    run_nodes(lambda k: rounds.time_rounds(transports[k], str(folder), [1, 3, 96, 96], rounds=1, warmup=0,
                                           dense="fcos_resnet18_fpn", solo=False), 2)
    assert seen and set(seen) == {((1, 3, 96, 96), (96,))}


@pytest.mark.slow
def test_real_ranks_give_the_masked_models_detections(tmp_path):
    """Two MPI processes, each loading its own shard: the root's detections and the bytes."""
    import numpy as np

    from disco_zoo.harness.runs import DISCO_ENTRY
    from disco_zoo.runtime.session import run_entry

    folder, model, part = graph_disco_folder(tmp_path, "fcos_resnet18_fpn", 2, args=ARGS)
    shape = [1, 3, SIDE, SIDE]
    x = _images(1)
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        want = model(x)
    run = run_entry(DISCO_ENTRY, 2, "mpi", args={"folder": str(folder), "input_shape": shape,
                                                 "input_path": str(tmp_path / "x.npy")}, timeout_s=60)
    assert run.output_rank == 0 and _max_box_gap(run.output, want) <= 1e-4
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert run.bytes["tags"] == tags and run.bytes["pairs"] == pairs


@pytest.mark.parametrize("engines", [("onnx", "onnx"), ("torch", "onnx")])
def test_onnx_nodes_run_the_split_core(tmp_path, engines):
    """The ONNX export of a detector is its split core: all-onnx ranks, fed the
    pre-processed image, return the masked model's head outputs (1e-4); a torch rank 0
    (transform, box decoding, NMS) with an onnx rank 1 returns its detections. Bytes are
    the accounting's, and the onnx rank never imports torch."""
    import numpy as np

    from disco_zoo.export.engines import check_root_engine
    from disco_zoo.export.onnx_node import export_onnx
    from disco_zoo.graph.stages import before_core
    from disco_zoo.runtime.session import run_entry
    from helpers import ONNX_ENTRY, TORCH_NODE_ENTRY

    folder, model, part = graph_disco_folder(tmp_path, "fcos_resnet18_fpn", 2, args=ARGS)
    shape = [1, 3, SIDE, SIDE]
    export_onnx(folder, tmp_path / "onnx", shape)
    program = json.loads((tmp_path / "onnx" / "node0" / "program.json").read_text())
    assert program["stages"] is True and program["output_structure"]["dict"] == [
        "0.cls_logits", "0.bbox_regression", "0.bbox_ctrness"]
    check_root_engine(["torch", "onnx"], tmp_path / "onnx")  # run and eval need detections: a torch root
    with pytest.raises(DiscoZooError, match=r"on rank 0 with torchvision .* --engine torch,onnx"):
        check_root_engine(["onnx", "onnx"], tmp_path / "onnx")
    x = _images(1)
    with torch.no_grad():
        core_in, _ = before_core(model, x)
        heads, _ = core_of(model)(core_in)
        detections = model(x)
    np.save(tmp_path / "x.npy", (x if engines[0] == "torch" else core_in).numpy())
    run = run_entry([ONNX_ENTRY if e == "onnx" else TORCH_NODE_ENTRY for e in engines], 2, "mpi", timeout_s=60,
                    args={"folder": str(folder), "program": str(tmp_path / "onnx"), "input_shape": shape,
                          "input_path": str(tmp_path / "x.npy")})
    if engines[0] == "onnx":
        assert set(run.output) == {f"0.{key}" for key in heads}
        for key, value in heads.items():
            assert (run.output[f"0.{key}"] - value).abs().max().item() <= 1e-4
    else:
        assert _max_box_gap(run.output, detections) <= 1e-4
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert run.bytes["tags"] == tags and run.bytes["pairs"] == pairs
    assert [r["torch_imported"] for r in run.per_rank if r["engine"] == "onnx"] == [False] * engines.count("onnx")


def test_the_backbone_starts_from_a_classifiers_weights(tmp_path):
    """``train --init-backbone``: a ResNet-18 classifier's trunk lands in the detector's
    declared backbone (its classifier and layer4, which the detector lacks, are left out);
    a checkpoint of another trunk, or a model with no declared backbone, is refused."""
    from safetensors.torch import save_file
    from torchvision.models import resnet18, resnet50

    from disco_zoo.weights import load_backbone_state, read_checkpoint

    torch.manual_seed(1)
    classifier = resnet18(num_classes=10).state_dict()
    save_file(classifier, str(tmp_path / "r18.safetensors"))
    detector = build_model("fcos_resnet18_fpn", **ARGS)
    note = load_backbone_state(detector, read_checkpoint(tmp_path / "r18.safetensors", "--init-backbone"))
    body = detector.backbone.body.state_dict()
    assert body and all(torch.equal(value, classifier[key]) for key, value in body.items())
    assert "layer4.0.conv1.weight" not in body and f"{len(classifier) - len(body)} checkpoint tensor(s) not used" in note
    save_file(resnet50().state_dict(), str(tmp_path / "r50.safetensors"))
    with pytest.raises(DiscoZooError, match=r"r50.safetensors: backbone tensor 'layer1.0.conv1.weight' has shape"):
        load_backbone_state(detector, read_checkpoint(tmp_path / "r50.safetensors", "--init-backbone"))
    with pytest.raises(DiscoZooError, match="declares no backbone"):
        load_backbone_state(build_model("resnet18"), read_checkpoint(tmp_path / "r18.safetensors", "--init-backbone"))


@pytest.mark.slow
def test_a_served_detector_returns_what_the_model_returns(tmp_path):
    """An application's call is the model's call: a detector built for 64 pixels resizes
    an 80-pixel image to 64, served across ranks as in one process (a run at 80 would
    configure it for 80 instead; that is for measuring a deployment size)."""
    import disco_zoo

    folder, model, part = graph_disco_folder(tmp_path, "fcos_resnet18_fpn", 2, args=ARGS)
    x = _images(1, side=80)
    with torch.no_grad():
        want = model(x)
    with disco_zoo.distributed(folder, nodes=2, timeout_s=60) as served:
        got = served(x)
    assert _max_box_gap(got, want) <= 1e-4
    assert model.transform.min_size == (SIDE,)


def test_a_detector_distils_from_its_heads(dense):
    """--distill on a detector compares the heads' outputs (its training forward returns
    losses): no pull where the student equals the teacher, a pull where it does not, and
    the sparsify loss hooks the heads of student and teacher."""
    from disco_zoo.distill import distilled_loss
    from disco_zoo.tasks import get_task

    task = get_task("detection")
    assert task.distillation_outputs(dense) is dense.head
    assert task.distillation_divergence(dense).keywords == {"class_scores": "sigmoid"}  # FCOS: one sigmoid per class
    with torch.no_grad():
        core_in, _ = dense.before_core(_images())
        teacher, _ = core_of(dense)(core_in)
    student = {k: v.clone().requires_grad_(True) for k, v in teacher.items()}
    task.distillation_loss(student, teacher).backward()
    assert all(v.grad.abs().max().item() < 1e-6 for v in student.values())
    moved = {k: (v + 0.5).requires_grad_(True) for k, v in teacher.items()}
    task.distillation_loss(moved, teacher).backward()
    assert all(v.grad.abs().max().item() > 1e-6 for v in moved.values())

    model = copy.deepcopy(dense).train()
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([3])}] * 2
    loss = distilled_loss(task.training_loss, model, task.distillation_loss, 1.0, task.distillation_outputs)
    with_teacher = loss(model, list(_images()), targets)
    assert with_teacher.item() > task.training_loss(model, list(_images()), targets).item()


@pytest.fixture
def small_boxes(tmp_path, monkeypatch):
    import disco_zoo.data.digit_boxes as boxes

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(boxes, "BOXES_COUNTS", {"train": 8, "val": 2, "test": 3})
    monkeypatch.chdir(tmp_path)


def _cli(*args: str):
    from disco_zoo.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}{result.exception!r}"
    return result


@pytest.mark.slow
def test_train_sparsify_and_eval_a_disco_detector(small_boxes):
    """The zoo's path: a dense FCOS trained a step, sparsified to 20% of dense traffic from
    it, loaded back from its folder, evaluated (box AP of DISCO over 2 processes, of the
    single-process DISCO model and of the dense model; bytes counted = accounting)."""
    from disco_zoo.hub import load_folder
    from disco_zoo.tasks import get_task

    common = ["--data", "digit_boxes", "--input-size", str(SIDE), "--batch-size", "4"]
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    save_file(resnet18().state_dict(), "r18.safetensors")
    _cli("train", "fcos_resnet18_fpn", *common, "--epochs", "1", "--init-backbone", "r18.safetensors",
         "--out", "models/fcos_resnet18_fpn.t")
    assert json.loads(Path("models/fcos_resnet18_fpn.t/config.json").read_text())["init_backbone"]["source"].endswith(
        "r18.safetensors")
    _cli("sparsify", "fcos_resnet18_fpn_disco_2node", *common, "--init", "models/fcos_resnet18_fpn.t",
         "--traffic", "0.2", "--epochs", "1", "--finetune-epochs", "0", "--limit", "4",
         "--out", "models/fcos_resnet18_fpn_disco_2node.t")
    folder = Path("models/fcos_resnet18_fpn_disco_2node.t")
    config = json.loads((folder / "config.json").read_text())
    assert config["task"] == "detection" and config["nodes"] == 2 and config["dense"] == "fcos_resnet18_fpn.t"
    assert config["accounting"]["traffic_ratio"] <= 0.2 and config["input_size"] == [3, SIDE, SIDE]
    model = load_folder(folder)
    assert isinstance(model, FCOS) and model.disco_partition.layers["head.classification_head.cls_logits"].calls == 2
    with torch.no_grad():
        detections = model.eval()(_images(1))
    assert set(get_task("detection").predictions(detections)[0]) == {"boxes", "labels", "scores"}

    _cli("eval", str(folder), "--no-latency", "--paper-size", "0", "--json", "--out", "result.json")
    report = json.loads(Path("result.json").read_text())
    accuracy, traffic = report["accuracy"], report["at_input"]
    assert accuracy["images"] == 3 and report["dense_model"] == "fcos_resnet18_fpn.t"
    for run in ("disco", "disco_single_process", "dense"):
        assert all(0.0 <= accuracy[f"{run}_{m}"] <= 1.0 for m in ("box_ap", "ap50", "ap75"))
    assert accuracy["disco_box_ap"] == pytest.approx(accuracy["disco_single_process_box_ap"], abs=1e-6)
    assert traffic["measured_bytes_per_pair"] == traffic["bytes_per_pair"]
    assert traffic["traffic_ratio"] <= 0.2


@pytest.mark.slow
def test_run_untrained_reports_detections_and_the_accountings_bytes():
    """``disco-zoo run fcos-resnet18-fpn-disco-2node --untrained --input-size 96``: each rank
    builds the variant (for 128) on the meta device and runs it at 96: the bytes are those
    of the variant built for 96."""
    from disco_zoo.commands.run import run_report

    report = run_report("fcos-resnet18-fpn-disco-2node", input_size=96, untrained=True, timeout_s=120)
    assert report["task"] == "detection" and report["nodes"] == 2 and "boxes" in report and "top" in report
    torch.manual_seed(0)
    built = build_model("fcos_resnet18_fpn_disco_2node", min_size=96, max_size=96).eval()
    acc = disco_accounting(built, (1, 3, 96, 96))
    assert acc.input_bytes_per_pair == {(0, 1): 96 * 96 * 4}  # the transformed image's third channel
    assert report["bytes_total"] == acc.disco_bytes + sum(acc.input_bytes_per_pair.values())


def test_a_model_without_stages_is_never_resized():
    """timm's ViT has a ``set_input_size`` of its own (it resamples the position embeddings):
    running "at a size" must leave any model without stages exactly as it was."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    with at_input_shape(vit, (1, 3, 64, 64)):
        assert core_input_shape(vit, (1, 3, 64, 64)) == (1, 3, 64, 64)
    assert vit.patch_embed.img_size == (32, 32)
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
