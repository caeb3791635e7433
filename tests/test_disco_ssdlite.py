"""The DISCO SSDlite detector end to end: torchvision's SSD (SSDlite, MobileNetV3-Large) in
stages (transform | backbone + extras + heads | default boxes, matching or decoding, NMS),
its core split across nodes, the stages on the root; masked model, loopback runs, training
through the CLI."""
import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models.detection.ssd import SSD
from typer.testing import CliRunner

from disco_zoo.disco.accounting import disco_accounting
from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.stages import at_input_shape, core_input_shape, core_of, has_stages
from disco_zoo.registry import build_model, get_entry
from disco_zoo.runtime.session import seeded_input
from helpers import (LoopbackNodes, detections_masks_open_and_closed, expected_disco_bytes, graph_disco_folder,
                     randomise_batchnorm)

ARCH = "ssdlite_mobilenet_v3_large"
SIDE = 64
ARGS = {"min_size": SIDE, "max_size": SIDE}  # torchvision's score_thresh 0.001 keeps every untrained score
PREDICTORS = {f"head.{head}_head.module_list.{level}.1" for head in ("classification", "regression")
              for level in range(6)}  # each level's 1x1 projection after its depthwise conv
TARGETS = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([3])},
           {"boxes": torch.tensor([[10.0, 12.0, 70.0, 60.0], [2.0, 2.0, 20.0, 22.0]]), "labels": torch.tensor([1, 7])}]


def _images(count: int = 2, side: int = SIDE) -> torch.Tensor:
    return torch.rand(count, 3, side, side, generator=torch.Generator().manual_seed(1))


def _max_box_gap(got, want) -> float:
    """The largest distance from a detection in one list to the nearest of the same label
    in the other (either way; the larger of box and score differences), and infinite when
    their counts differ. Order-free: an untrained SSDlite gives exactly equal scores to
    default boxes on like patches of an image, which float rounding may rank either way.
    Detections scoring within 1e-5 of the lower of the two lists' last kept scores are left
    out: at torchvision's top-k cut such ties may keep either detection."""
    gap = 0.0
    for a, b in zip(got, want, strict=True):
        if len(a["scores"]) != len(b["scores"]):
            return float("inf")
        if len(a["scores"]):
            cut = max(a["scores"].min().item(), b["scores"].min().item()) + 1e-5
            a, b = ({k: v[d["scores"] > cut] for k, v in d.items()} for d in (a, b))
        gap = max(gap, _nearest(a, b), _nearest(b, a))
    return gap


def _nearest(a: dict, b: dict) -> float:
    """The largest distance from a detection of ``a`` to the nearest in ``b`` of its label."""
    rows_a = torch.cat([a["boxes"], a["scores"][:, None]], dim=1)
    rows_b = torch.cat([b["boxes"], b["scores"][:, None]], dim=1)
    distance = (rows_a[:, None] - rows_b[None]).abs().amax(dim=-1)
    distance[a["labels"][:, None] != b["labels"][None]] = float("inf")
    return distance.amin(dim=1).max().item() if len(rows_a) else 0.0


def _spread_scores(model: nn.Module) -> nn.Module:
    """Class scores that differ from box to box: an untrained SSDlite's are all 1/11 to
    four digits (torchvision's init, std 0.03), so any order of its detections would do and
    a comparison would show nothing. Random BatchNorm statistics and class predictors 30
    times torchvision's init spread them over 0.04-0.95."""
    randomise_batchnorm(model)
    with torch.no_grad():
        for block in model.head.classification_head.module_list:
            block[1].weight.mul_(30)
    return model


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return _spread_scores(build_model(ARCH, **ARGS).eval())


def _disco_folder(tmp_path, args: dict = ARGS) -> tuple[Path, nn.Module, object]:
    """:func:`graph_disco_folder` of the detector, its scores spread, saved again as shards."""
    from disco_zoo.disco.shards import save_shards

    folder, model, part = graph_disco_folder(tmp_path, ARCH, 2, args=args)
    save_shards(_spread_scores(model), folder, extra={"arch": ARCH, "args": args})
    return folder, model, part


def test_the_model_is_torchvisions_ssdlite():
    """The same modules, weights' shapes and settings as torchvision's own builder (no
    weights: reduced tail), its fixed size the canvas instead of 320."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    model = build_model(ARCH)
    reference = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=11)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert (repr(model.backbone), repr(model.head), repr(model.anchor_generator)) == (
        repr(reference.backbone), repr(reference.head), repr(reference.anchor_generator))
    assert sum(p.numel() for p in model.parameters()) == 2_331_260
    assert all(p.requires_grad for p in model.parameters())
    settings = ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates", "neg_to_pos_ratio")
    assert [getattr(model, s) for s in settings] == [getattr(reference, s) for s in settings]
    assert (model.transform.image_mean, model.transform.image_std) == ([0.5] * 3, [0.5] * 3)
    assert (model.transform.min_size, model.transform.max_size, model.transform.fixed_size) == ((128,), 128, (128, 128))
    assert model.pretrained_cfg["input_size"] == (3, 128, 128)
    assert model.pretrained_cfg["backbone"] == "backbone.features"
    with torch.device("meta"):  # a node model: its default boxes are real all the same
        node = build_model(ARCH)
    assert next(node.parameters()).is_meta
    node.anchor_generator._wh_pairs = [pair.to("meta") for pair in node.anchor_generator._wh_pairs]
    got, want = node._anchor_generator()._wh_pairs, model.anchor_generator._wh_pairs
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))


def test_the_backbone_starts_from_a_mobilenet_trunk(tmp_path):
    """``train --init-backbone``: a MobileNetV3-Large trunk, under its classifier's prefix
    (``features.``) or a segmenter's (``backbone.``), lands in SSDlite's extractor, whose
    C4 block torchvision cuts in two; the extra layers and heads keep their init. The
    reduced tail (torchvision's default without backbone weights) does not fit a full
    trunk, and the error says which argument builds the one that does."""
    from safetensors.torch import save_file
    from torchvision.models.mobilenetv3 import mobilenet_v3_large

    from disco_zoo.commands.common import parse_model_args
    from disco_zoo.weights import load_backbone_state, read_checkpoint

    torch.manual_seed(2)
    trunk = mobilenet_v3_large(num_classes=10).features.state_dict()
    save_file({f"features.{k}": v for k, v in trunk.items()}, str(tmp_path / "classifier.safetensors"))
    save_file({**{f"backbone.{k}": v for k, v in trunk.items()}, "classifier.weight": torch.zeros(11, 128, 1, 1)},
              str(tmp_path / "segmenter.safetensors"))
    for name, prefix, unused in (("classifier", "features.", 0), ("segmenter", "backbone.", 1)):
        detector = build_model(ARCH, **ARGS, **parse_model_args(["reduced_tail=false"]))
        extra = copy.deepcopy(detector.backbone.extra.state_dict())
        note = load_backbone_state(detector, read_checkpoint(tmp_path / f"{name}.safetensors", "--init-backbone"))
        assert f"loaded {len(trunk)} backbone tensor(s) (under '{prefix}')" in note
        assert f"; {unused} checkpoint tensor(s) not used" in note
        head, tail = detector.backbone.features
        assert torch.equal(head[-1][0].weight, trunk["13.block.0.0.weight"])  # the C4 block's expansion
        assert torch.equal(tail[0][0][0].weight, trunk["13.block.1.0.weight"])  # and its depthwise conv
        assert torch.equal(tail[-1][0].weight, trunk["16.0.weight"])
        assert all(torch.equal(v, extra[k]) for k, v in detector.backbone.extra.state_dict().items())
    with pytest.raises(DiscoZooError, match=r"classifier.safetensors: backbone tensor '13.block.3.0.weight' has shape "
                                            r"\[160, 672, 1, 1\] .* \(MODEL and --arg KEY=VALUE\)"):
        load_backbone_state(build_model(ARCH, **ARGS), read_checkpoint(tmp_path / "classifier.safetensors",
                                                                       "--init-backbone"))


def test_the_staged_forward_is_torchvisions_ssd(dense):
    """Eval: the same detections as SSD.forward; train: the same losses (on 80-pixel
    images, which the transform resizes to 64 and the boxes are mapped back from)."""
    x = _images(side=80)
    with torch.no_grad():
        got, want = dense(x), SSD.forward(dense, list(x))
    assert [len(d["boxes"]) for d in got] == [300, 300] and _max_box_gap(got, want) == 0.0
    model = copy.deepcopy(dense).train()  # train mode moves BatchNorm's statistics
    losses = model(list(x), TARGETS)
    reference = SSD.forward(model, list(x), TARGETS)
    assert set(losses) == {"classification", "bbox_regression"}
    assert all(torch.allclose(losses[k], reference[k]) for k in losses)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}, TARGETS[1]]
    losses, reference = model(list(x), empty), SSD.forward(model, list(x), empty)  # an image with no boxes
    assert all(torch.allclose(losses[k], reference[k]) for k in losses)


def test_distillation_compares_softmax_scores(dense):
    """--distill on SSDlite: its classes are one softmax per default box (background
    first), as its post-processing scores them, so the soft targets are the teacher's
    softmax: no pull where the student equals the teacher or differs by a shift softmax
    ignores, a pull where the distributions differ; an unknown scoring is refused."""
    from disco_zoo.tasks import get_task

    task = get_task("detection")
    assert dense.pretrained_cfg["class_scores"] == "softmax"
    divergence = task.distillation_divergence(dense)
    with torch.no_grad():
        core_in, _ = dense.before_core(_images())
        teacher, _ = core_of(dense)(core_in)
    for shift, pulled in ((0.0, False), (0.5, False), (None, True)):
        student = {k: (v + (torch.randn_like(v) if shift is None else shift)).requires_grad_(True)
                   for k, v in teacher.items() if k == "cls_logits"}
        student["bbox_regression"] = teacher["bbox_regression"].clone().requires_grad_(True)
        divergence(student, teacher).backward()
        assert (student["cls_logits"].grad.abs().max().item() > 1e-6) == pulled, shift
    model = copy.deepcopy(dense)
    model.pretrained_cfg = {**model.pretrained_cfg, "class_scores": "tanh"}
    with pytest.raises(DiscoZooError, match="scores classes by one of sigmoid, softmax"):
        task.distillation_divergence(model)


def test_bad_targets_are_one_clear_error(dense):
    model = copy.deepcopy(dense).train()  # two images: SSDlite's last maps are 1x1 (BatchNorm trains on 2+ values)
    with pytest.raises(DiscoZooError, match=r"box without area \[4.0, 6.0, 4.0, 40.0\]"):
        model(list(_images()), [TARGETS[0], {"boxes": torch.tensor([[4.0, 6.0, 4.0, 40.0]]),
                                             "labels": torch.tensor([1])}])
    with pytest.raises(DiscoZooError, match="needs targets"):
        model(list(_images()))


def test_preprocess_at_size_is_a_model_built_for_that_size(dense):
    """At 96x80 (height x width) the transform is that of SSD(size=(80, 96)): an image of
    that size is not resized; undone, it resizes to its 64 pixels again."""
    built = build_model(ARCH, min_size=80, max_size=96)
    with at_input_shape(dense, (1, 3, 96, 80)):
        assert dense.transform.fixed_size == (80, 96)
        assert (dense.transform.min_size, dense.transform.max_size) == (built.transform.min_size, 96)
        assert core_input_shape(dense, (1, 3, 96, 80), at_size=False) == (1, 3, 96, 80)
    assert (dense.transform.min_size, dense.transform.max_size, dense.transform.fixed_size) == ((SIDE,), SIDE,
                                                                                              (SIDE, SIDE))
    assert core_input_shape(dense, (1, 3, 96, 80), at_size=False) == (1, 3, SIDE, SIDE)


def test_the_variant_splits_the_core_and_keeps_the_stages_on_the_root():
    entry = get_entry(f"{ARCH}_disco_2node")
    assert entry.task == "detection" and entry.kwargs == {"dense": ARCH, "nodes": 2}
    assert "SSDlite" in get_entry(ARCH).description and "MobileNetV3-Large" in get_entry(ARCH).description
    torch.manual_seed(0)
    model = build_model(f"{ARCH}_disco_2node", **ARGS)
    part = model.disco_partition
    assert has_stages(model) and isinstance(model, SSD)
    # 55 split convs (MobileNetV3's 1x1s and SE blocks, the extras' 1x1s) and the heads' 12 predictors
    assert len(part.layers) == 67 and part.outputs == []  # the heads reduce on the root: nothing to gather
    assert {n for n, l in part.layers.items() if l.mode == "reduce"} == PREDICTORS
    assert all(l.calls == 1 for l in part.layers.values())  # SSD's heads are per level, not shared
    assert next(iter(part.layers)) == "backbone.features.0.0.0"  # the first split layer reads the transformed image
    modules = dict(model.named_modules())
    depthwise = {n for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert depthwise == set(part.grouped) and len(depthwise) == 15 + 4 + 12  # backbone, extras, heads
    for split in part.grouped.values():  # every depthwise conv's channels stay whole, on one node each
        assert split.conv_groups == modules[split.name].in_channels and split.in_groups == split.out_groups
    assert core_input_shape(model, (1, 3, SIDE, SIDE)) == (1, 3, SIDE, SIDE)
    assert core_input_shape(model, (1, 3, 80, 80)) == (1, 3, 80, 80)  # SSD batches without padding
    assert set(dict(core_of(model).named_modules())) <= set(modules)
    acc = disco_accounting(model, (1, 3, SIDE, SIDE))
    assert acc.params_dense == 2_331_260 and sum(acc.params_per_node) == acc.params_dense


def test_masks_open_give_the_dense_detections(dense):
    want, got, closed = detections_masks_open_and_closed(dense, _images())
    assert _max_box_gap(got, want) <= 1e-4
    assert _max_box_gap(closed, want) > 1e-2


@pytest.mark.parametrize("side", [SIDE, 80])
def test_nodes_give_the_masked_models_detections(tmp_path, side):
    """Rank 0 transforms the image, scatters the core's input, and decodes the boxes from
    the heads' outputs reduced on it: the masked model's detections; every byte on the
    wire is the accounting's (a run at 80 pixels runs the 64-pixel model at 80). The node
    models are built on the meta device, their default boxes made on the root."""
    folder, model, part = _disco_folder(tmp_path)
    shape = [2, 3, side, side]
    x = seeded_input(shape, 0).clamp(0, 1)
    with torch.no_grad(), at_input_shape(model, shape):
        want = model(x)
    outs, counted = LoopbackNodes(folder, 2, timeout_s=60)(part, shape, x)
    assert isinstance(outs[0], list) and [len(d["boxes"]) for d in outs[0]] == [300, 300]
    assert _max_box_gap(outs[0], want) <= 1e-4
    assert isinstance(outs[1], tuple)  # the other rank ends with its core's partial outputs
    tags, pairs = expected_disco_bytes(model, part, shape)
    assert counted["tags"] == tags and counted["pairs"] == pairs
    acc = disco_accounting(model, tuple(shape))
    assert sum(counted["pairs"].values()) == acc.disco_bytes + sum(acc.input_bytes_per_pair.values())


def test_a_detector_accounted_and_run_at_another_size_is_that_sizes(tmp_path):
    """Built at 64 (its canvas), accounted and run at 96 (a deployment size): the figures
    and the detections of the same detector built at 96 (its fixed size 96), every byte on
    the wire the accounting's; the model itself still resizes to 64 after."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    folder, model, part = _disco_folder(tmp_path / "a")
    _, built, _ = _disco_folder(tmp_path / "b", {"min_size": 96, "max_size": 96})
    shape = [1, 3, 96, 96]
    acc, want = disco_accounting(model, tuple(shape)), disco_accounting(built, tuple(shape))
    assert acc.input_bytes_per_pair == want.input_bytes_per_pair
    assert (acc.disco_bytes, acc.bytes_per_pair, acc.bytes_per_layer, acc.flops_per_node) == (
        want.disco_bytes, want.bytes_per_pair, want.bytes_per_layer, want.flops_per_node)
    assert disco_accounting(model, (1, 3, SIDE, SIDE)).disco_bytes < acc.disco_bytes
    assert model.transform.fixed_size == (SIDE, SIDE) and model.transform.min_size == (SIDE,)  # as it was built

    x = seeded_input(shape, 0).clamp(0, 1)
    with torch.no_grad():
        reference = built(x)
    outs, counted = LoopbackNodes(folder, 2, timeout_s=60)(part, shape, x)
    assert _max_box_gap(outs[0], reference) <= 1e-4
    assert sum(counted["pairs"].values()) == acc.disco_bytes + sum(acc.input_bytes_per_pair.values())


@pytest.fixture
def small_boxes(tmp_path, monkeypatch):
    import disco_zoo.data.digit_boxes as boxes

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(boxes, "BOXES_COUNTS", {"train": 8, "val": 2, "test": 3})
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow  # 85 s on two cores busy with a training run
def test_train_and_sparsify_through_the_cli(small_boxes, tmp_path):
    """``disco-zoo train ssdlite_mobilenet_v3_large --arg reduced_tail=false --init-backbone
    TRUNK --data digit_boxes --epochs 1 --limit 8 --input-size 128``: a folder with the test
    split's box AP and its builder arguments; ``sparsify`` from it builds the DISCO variant
    with those arguments (the full tail), so the dense weights load."""
    from safetensors.torch import save_file
    from torchvision.models.mobilenetv3 import mobilenet_v3_large

    from disco_zoo.cli import app

    save_file(mobilenet_v3_large().state_dict(), str(tmp_path / "mobilenet.safetensors"))
    out = tmp_path / "ssdlite.t"
    common = ["--data", "digit_boxes", "--limit", "8", "--input-size", "128"]
    result = CliRunner().invoke(app, ["train", ARCH, *common, "--epochs", "1", "--arg", "reduced_tail=false",
                                      "--init-backbone", str(tmp_path / "mobilenet.safetensors"), "--out", str(out)])
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    config = json.loads(Path(out / "config.json").read_text())
    assert config["task"] == "detection" and config["input_size"] == [3, 128, 128]
    assert config["args"]["reduced_tail"] is False
    assert config["init_backbone"]["source"].endswith("mobilenet.safetensors")
    assert 0.0 <= config["metrics"]["test_box_ap"] <= 1.0
    disco = tmp_path / "ssdlite_disco_2node.t"
    result = CliRunner().invoke(app, ["sparsify", f"{ARCH}_disco_2node", *common, "--init", str(out),
                                      "--traffic", "0.2", "--epochs", "1", "--finetune-epochs", "0",
                                      "--out", str(disco)])
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    config = json.loads(Path(disco / "config.json").read_text())
    assert config["args"]["reduced_tail"] is False and config["dense"] == f"{ARCH}.t"
