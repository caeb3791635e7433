"""The segmentation task and the torchvision segmenters: registered, built without a
download, traced, trained on the task's loss, evaluated on a folder checked against the
model's config."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from disco_zoo.errors import DiscoZooError
from disco_zoo.graph.layer_graph import trace_model
from disco_zoo.registry import build_model, get_entry
from disco_zoo.store import FolderConfig
from disco_zoo.tasks import get_task, task_of
from disco_zoo.tasks.segmentation import IGNORE_INDEX
from helpers import write_mask_folder

SEG = get_task("segmentation")
DENSE = ("deeplabv3_resnet18", "lraspp_mobilenet_v3_large")


def _config(**changes):
    base = FolderConfig(arch="deeplabv3_resnet18", kind="dense", tag="t", args={"num_classes": 3}, files=(),
                        task="segmentation", input_size=(3, 32, 64), mean=(0.5,) * 3, std=(0.25,) * 3,
                        class_names=("background", "a", "b"))
    return dataclasses.replace(base, **changes)


def test_the_task_is_registered_with_its_hub_tag_and_deployment_size():
    assert SEG.name == "segmentation" and SEG.hub_tag == "image-segmentation" and SEG.deployment_size == 512
    for arch in DENSE + tuple(f"{a}_disco_2node" for a in DENSE):
        assert task_of(get_entry(arch)) is SEG
    assert get_entry("deeplabv3_resnet18_disco_2node").kwargs == {"dense": "deeplabv3_resnet18", "nodes": 2}


@pytest.mark.parametrize("arch", DENSE)
def test_dense_segmenters_build_trace_and_give_per_pixel_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    assert model.pretrained_cfg == {"input_size": (3, 128, 128), "fixed_input_size": False, "num_classes": 11}
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    assert list(out) == ["out"] and out["out"].shape == (2, 11, 128, 128)
    graph = trace_model(model, (1, 3, 128, 128))
    assert len(graph.layers) > 20
    assert build_model(arch, num_classes=4).eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 4, 64, 64)


def test_deeplab_reads_resnet18_c4_features_at_output_stride_16():
    model = build_model("deeplabv3_resnet18").eval()
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 128, 128))["out"]
    assert features.shape == (1, 256, 8, 8)
    assert not hasattr(model.backbone, "layer4")  # IntermediateLayerGetter stops after layer3
    assert 5_000_000 < sum(p.numel() for p in model.parameters()) < 6_000_000


def test_training_loss_is_cross_entropy_of_out_with_ignored_pixels():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)
    model = lambda x: {"out": net(x)}  # noqa: E731  (what torchvision segmenters return)
    x, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    y[0, 0] = IGNORE_INDEX
    expected = F.cross_entropy(net(x), y, ignore_index=IGNORE_INDEX)
    assert torch.equal(SEG.training_loss(model, x, y), expected)
    assert torch.equal(SEG.training_loss(net, x, y), expected)  # a model returning plain logits too


def test_train_data_from_a_mask_folder(tmp_path):
    write_mask_folder(tmp_path, split="train", size=(32, 32))
    write_mask_folder(tmp_path, split="val", count=2, size=(32, 32))
    data = SEG.train_data(str(tmp_path), 32, 2, seed=0)
    assert data.model_args == {"num_classes": 3} and data.info.class_names == ("background", "a", "b")
    assert len(data.loaders["test"].dataset) == 2  # no test/: the val split
    images, masks = next(iter(data.loaders["train"]))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)
    with pytest.raises(DiscoZooError, match=r"--input-size 64, but .*train holds 32x32 images"):
        SEG.train_data(str(tmp_path), 64, 2, seed=0)
    with pytest.raises(DiscoZooError, match=r"train/train is missing"):
        SEG.train_data(str(tmp_path / "train"), 64, 2, seed=0)


def test_eval_split_reads_test_or_val_and_checks_the_config(tmp_path):
    write_mask_folder(tmp_path, split="val", count=2)
    split = SEG.eval_split(str(tmp_path), _config())
    assert split.inputs.shape == (2, 3, 32, 64) and split.targets.shape == (2, 32, 64) and len(split) == 2
    assert SEG.eval_split(str(tmp_path / "val"), _config()).inputs.shape == (2, 3, 32, 64)
    with pytest.raises(DiscoZooError, match=r"classes.txt names 3 classes .* trained on 2"):
        SEG.eval_split(str(tmp_path), _config(class_names=("background", "a"), args={"num_classes": 2}))
    with pytest.raises(DiscoZooError, match=r"takes only 64x64"):
        SEG.eval_split(str(tmp_path), _config(fixed_input_size=True, input_size=(3, 64, 64)))


def test_embedded_eval_split_is_the_cached_test_canvases(tmp_path, monkeypatch):
    import disco_zoo.data.digit_canvas as canvas

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(canvas, "CANVAS_COUNTS", {"train": 2, "val": 1, "test": 3})
    config = _config(input_size=(3, 64, 64), args={"num_classes": 11}, class_names=canvas.CANVAS_CLASSES)
    split = SEG.eval_split("digit_canvas", config)
    assert split.inputs.shape == (3, 3, 64, 64) and split.targets.max() <= 10 and split.source == "digit_canvas"
    with pytest.raises(DiscoZooError, match=r"not square"):
        SEG.eval_split("digit_canvas", dataclasses.replace(config, input_size=(3, 64, 96)))


def test_the_train_command_trains_a_segmenter_on_a_mask_folder_and_the_folder_loads(tmp_path):
    from typer.testing import CliRunner

    from disco_zoo import create_model
    from disco_zoo.cli import app
    from disco_zoo.store import load_folder_config

    data = tmp_path / "tiles"
    for split in ("train", "val"):
        write_mask_folder(data, split=split, count=4, size=(32, 32))
    out = tmp_path / "lraspp_mobilenet_v3_large.tiles"
    result = CliRunner().invoke(app, ["train", "lraspp_mobilenet_v3_large", "--data", str(data), "--input-size", "32",
                                      "--epochs", "1", "--batch-size", "2", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = load_folder_config(out)
    assert config.task == "segmentation" and config.class_names == ("background", "a", "b")
    assert config.input_size == (3, 32, 32) and config.num_classes == 3
    assert {"val_miou", "val_pixel_acc", "test_miou", "test_pixel_acc"} <= set(config.metrics)
    model = create_model(str(out), pretrained=True)
    split = SEG.eval_split(str(data), config)
    assert SEG.score(SEG.predict(model, split.inputs), split.targets)["miou"] == pytest.approx(
        config.metrics["test_miou"], abs=1e-6)


def test_run_summary_names_the_predicted_mask_classes_by_area():
    from disco_zoo.tasks import get_task

    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 2, :, :3] = 1.0  # class 2 on 12 pixels, class 0 on the other 4
    task = get_task("segmentation")
    summary = task.summary({"out": logits})
    assert summary == {"mask_shape": [4, 4], "classes": [{"class": 2, "pixels": 12}, {"class": 0, "pixels": 4}]}
    assert task.summary_line(summary) == "predicted mask 4x4, largest classes: 2 (75%), 0 (25%)"
