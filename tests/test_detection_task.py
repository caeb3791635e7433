"""The detection task and torchvision's FCOS on a ResNet-18 FPN: registered, built without
a download, trained one step by the shared loop on the task's loss, scored end to end on
a COCO folder checked against the model's config."""
import dataclasses

import pytest
import torch
from torchvision.models.detection.fcos import FCOS

from disco_zoo.commands.common import split_metrics
from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import build_model, get_entry
from disco_zoo.store import FolderConfig
from disco_zoo.tasks import get_task, task_of
from disco_zoo.train import TrainConfig, fit
from helpers import write_coco_folder

DET = get_task("detection")
SMALL = {"train": 8, "val": 2, "test": 3}


@pytest.fixture
def small_cache(tmp_path, monkeypatch):
    import disco_zoo.data.digit_boxes as boxes

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(boxes, "BOXES_COUNTS", SMALL)


def _config(**changes):
    names = ("background",) + tuple(str(d) for d in range(10))
    base = FolderConfig(arch="fcos_resnet18_fpn", kind="dense", tag="t", args={"num_classes": 11}, files=(),
                        task="detection", input_size=(3, 64, 64), mean=(0.0,) * 3, std=(1.0,) * 3, class_names=names)
    return dataclasses.replace(base, **changes)


def test_the_task_is_registered_with_its_hub_tag_metrics_and_model():
    assert DET.name == "detection" and DET.hub_tag == "object-detection" and DET.deployment_size == 640
    assert DET.embedded_dataset == "digit_boxes" and DET.primary_metric.name == "box_ap"
    assert task_of(get_entry("fcos_resnet18_fpn")) is DET and DET.floor_scores(None) is None
    assert "disjoint digit scans" in DET.embedded_facts(128).description


def test_fcos_builds_without_download_and_keeps_the_canvas_side():
    model = build_model("fcos_resnet18_fpn").eval()
    assert model.pretrained_cfg["input_size"] == (3, 128, 128) and model.pretrained_cfg["num_classes"] == 11
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    assert isinstance(model, FCOS) and type(model.backbone.body.layer1[0]).__name__ == "BasicBlock"
    images, _ = model.transform([torch.rand(3, 128, 128)])
    assert images.tensors.shape == (1, 3, 128, 128)  # not upscaled to torchvision's default 800


def test_fit_trains_one_step_and_predictions_are_scored_end_to_end(small_cache):
    data = DET.train_data("digit_boxes", 64, batch_size=8, seed=0)
    assert data.model_args == {"num_classes": 11, "min_size": 64, "max_size": 64}
    assert data.info.mean == (0.0,) * 3 and data.info.class_names[1:] == tuple(str(d) for d in range(10))
    torch.manual_seed(0)
    model = build_model("fcos_resnet18_fpn", **data.model_args)
    losses = fit(model, data.loaders["train"], TrainConfig(epochs=1, lr=1e-3), show_progress=False,
                 loss=DET.training_loss)
    assert len(losses) == 1 and torch.isfinite(torch.tensor(losses[0]))
    metrics = split_metrics(DET, model, data.loaders)
    assert set(metrics) == {f"{s}_{m}" for s in ("val", "test") for m in ("box_ap", "ap50", "ap75")}
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    split = DET.eval_split("digit_boxes", _config())
    assert isinstance(split.inputs, torch.Tensor) and split.inputs.shape == (3, 3, 64, 64) and len(split) == 3
    scores = DET.score_split(model, split)
    assert set(scores) == {"box_ap", "ap50", "ap75"}
    summary = DET.summary(DET.predict(model, split.inputs[:1]))
    assert DET.summary_line(summary).startswith(f"{summary['boxes']} boxes")


def test_folder_data_checks_the_categories_and_sizes(tmp_path):
    root = write_coco_folder(tmp_path / "data", splits=("train", "val"))
    data = DET.train_data(str(root), 64, batch_size=2, seed=0)
    assert data.info.class_names == ("background", "a", "N/A", "c") and data.model_args["num_classes"] == 4
    assert len(data.loaders["test"].dataset) == 2  # test falls back to val
    config = _config(class_names=("background", "a", "N/A", "c"), args={"num_classes": 4})
    split = DET.eval_split(str(root), config)
    assert len(split) == 2 and split.targets[0]["labels"].tolist() == [1, 3]
    with pytest.raises(DiscoZooError, match="categories name 3 ids .* trained on 10"):
        DET.eval_split(str(root), _config())
    with pytest.raises(DiscoZooError, match="mean/std must be 0/1"):
        DET.eval_split(str(root), dataclasses.replace(config, mean=(0.5,) * 3))
    with pytest.raises(DiscoZooError, match="too small"):
        DET.train_data(str(root), 32, batch_size=2, seed=0)
    with pytest.raises(DiscoZooError, match="instances_train.json is missing"):
        DET.train_data(str(tmp_path), 64, batch_size=2, seed=0)


def test_training_loss_sums_the_models_losses():
    class Losses(torch.nn.Module):
        def forward(self, images, targets):
            return {"a": torch.tensor(1.5), "b": torch.tensor(2.0)}

    assert float(DET.training_loss(Losses(), [torch.zeros(3, 4, 4)], [{}])) == 3.5


def test_augmented_training_samples_keep_boxes_inside_and_repeat_under_a_seed(small_cache):
    """--augment transforms training samples only: every box stays inside its (new)
    image with a known label, the draw repeats under a seed, and val/test are untouched."""
    plain = DET.train_data("digit_boxes", 64, batch_size=8, seed=0)
    data = DET.train_data("digit_boxes", 64, batch_size=8, seed=0, augment=True)
    train = data.loaders["train"].dataset
    assert plain.loaders["train"].dataset.transform is None and train.transform is not None
    for split in ("val", "test"):
        assert data.loaders[split].dataset.transform is None
    originals = {i: set(train.annotations.labels[i].tolist()) for i in range(len(train))}

    def draw(seed):
        torch.manual_seed(seed)
        return [train[i] for i in range(len(train))]

    first, again, other = draw(0), draw(0), draw(1)
    changed = 0
    for i, ((image, target), (image2, target2)) in enumerate(zip(first, again)):
        assert torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
        assert target["image_id"] == train.annotations.image_ids[i]
        assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() <= image.max() <= 1
        boxes, (height, width) = target["boxes"], image.shape[-2:]
        assert boxes.shape == (len(target["labels"]), 4) and len(boxes) >= 1
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] - boxes[:, :2] >= 2).all()
        assert set(target["labels"].tolist()) <= originals[i]
        changed += image.shape != plain.loaders["train"].dataset[i][0].shape
    assert changed > 0  # zoom-out and crops change the image size
    assert any(not torch.equal(a[0], b[0]) if a[0].shape == b[0].shape else True for a, b in zip(first, other))


def test_augment_is_refused_where_a_task_offers_none_and_for_evaluation(small_cache):
    from disco_zoo.data.coco_folder import coco_folder_loader
    from disco_zoo.data.digit_boxes import embedded_boxes_folder

    with pytest.raises(DiscoZooError, match="classification training has no augmentation; leave out --augment"):
        get_task("classification").train_data("digits", 8, 4, seed=0, limit=4, augment=True)
    with pytest.raises(DiscoZooError, match="augmentation is for training loaders only"):
        coco_folder_loader(embedded_boxes_folder(64), "val", augment=True)
