"""Task kinds: looked up by name from a config or an entry; each holds its data, metric,
loss and output post-processing, and classification's figures are today's figures."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from disco_zoo.commands.common import model_metadata, split_metrics, storage_decision
from disco_zoo.data.digits import DIGITS_MEAN, digits_dataset, digits_loaders
from disco_zoo.errors import DiscoZooError
from disco_zoo.hub import get_pretrained_cfg
from disco_zoo.registry import build_model, get_entry
from disco_zoo.store import FolderConfig
from disco_zoo.tasks import TASKS, find_metric, get_task, task_of
from helpers import write_image_folder

CLASSIFICATION = get_task("classification")


def _config(**changes):
    """A published dense model's config, with some fields changed."""
    return dataclasses.replace(get_pretrained_cfg("resnet18.digits"), **changes)


def test_tasks_are_looked_up_by_the_name_a_config_or_entry_gives():
    assert task_of(get_pretrained_cfg("resnet18_disco_2node.digits")) is CLASSIFICATION
    assert task_of(get_entry("resnet18")) is CLASSIFICATION
    assert all(name == task.name for name, task in TASKS.items())
    with pytest.raises(DiscoZooError, match="unknown task kind 'depth'.*classification"):
        get_task("depth")
    with pytest.raises(DiscoZooError, match="names no task"):
        task_of(torch.nn.Linear(2, 2))


def test_metrics_are_named_for_the_result_keys():
    assert [m.name for m in CLASSIFICATION.metrics] == ["top1"]
    assert find_metric("top1") is CLASSIFICATION.primary_metric
    assert find_metric("top1").format(0.99259) == "99.26%"
    with pytest.raises(DiscoZooError, match="unknown metric"):
        find_metric("miou_of_nothing")


def test_outputs_become_predictions_and_are_scored():
    logits = [[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [1.0, 0.5, 0.0]]  # as the root rank reports them
    predictions = CLASSIFICATION.predictions(logits)
    assert predictions.tolist() == [1, 0, 2, 0]
    assert CLASSIFICATION.score(predictions, torch.tensor([1, 0, 1, 0])) == {"top1": 0.75}


def test_training_loss_is_cross_entropy_of_the_models_output():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(CLASSIFICATION.training_loss(net, x, y), F.cross_entropy(net(x), y))


def test_evaluate_over_a_loader_is_top1_of_all_batches():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    loader = digits_loaders(size=8, batch_size=32, limit=100)["test"]
    images, labels = loader.dataset.tensors
    with torch.no_grad():
        expected = float((net(images).argmax(1) == labels).float().mean())
    assert CLASSIFICATION.evaluate(net, loader) == {"top1": expected}
    assert split_metrics(CLASSIFICATION, net, {"val": loader, "test": loader}) == {"val_top1": expected,
                                                                                 "test_top1": expected}


def test_embedded_eval_split_is_the_digits_test_split_at_the_models_size():
    config = get_pretrained_cfg("resnet18_disco_2node.digits")
    split = CLASSIFICATION.eval_split("digits", config)
    images, labels = digits_dataset("test", size=config.input_size[-1]).tensors
    assert torch.equal(split.inputs, images) and torch.equal(split.targets, labels) and len(split) == 270
    with pytest.raises(DiscoZooError, match="class_names"):
        CLASSIFICATION.eval_split("digits", _config(class_names=("cat", "dog"), args={"num_classes": 2}))


def test_folder_eval_split_uses_the_models_preprocessing_and_classes(tmp_path):
    classes = tuple(str(d) for d in range(10))
    write_image_folder(tmp_path / "val", classes=classes, per_class=1)
    config = get_pretrained_cfg("resnet18.digits")
    split = CLASSIFICATION.eval_split(str(tmp_path), config)
    assert split.inputs.shape == (10, *config.input_size) and split.targets.tolist() == list(range(10))
    # image 0 of class 1 has the constant value 60 in every channel (greyscale), digits' mean/std
    assert split.inputs[1, 0].mean().item() == pytest.approx((60 / 255 - DIGITS_MEAN) / config.std[0], abs=1e-4)

    other = tmp_path / "other"
    write_image_folder(other, classes=("cat", "dog"), per_class=1)
    with pytest.raises(DiscoZooError, match="class_names of resnet18.digits"):
        CLASSIFICATION.eval_split(str(other), config)
    with pytest.raises(DiscoZooError, match="has 2 classes but resnet18.digits has 10 outputs"):
        CLASSIFICATION.eval_split(str(other), _config(class_names=None))


def test_train_data_embedded_and_folder(tmp_path):
    digits = CLASSIFICATION.train_data("digits", input_size=8, batch_size=16, seed=0, limit=20)
    assert set(digits.loaders) == {"train", "val", "test"} and len(digits.loaders["train"].dataset) == 20
    assert digits.model_args == {"num_classes": 10}
    assert digits.info.config_fields() == {
        "dataset": "digits", "mean": [DIGITS_MEAN] * 3, "std": list(digits.info.std), "interpolation": "bilinear",
        "crop_pct": 1.0, "class_names": [str(d) for d in range(10)]}

    root = tmp_path / "pets"
    for split in ("train", "val"):
        write_image_folder(root / split, classes=("cat", "dog"), per_class=2)
    folder = CLASSIFICATION.train_data(str(root), input_size=16, batch_size=4, seed=0)
    assert folder.info.name == "pets" and folder.info.class_names == ("cat", "dog")
    assert folder.model_args == {"num_classes": 2}
    images, labels = next(iter(folder.loaders["val"]))
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1]

    write_image_folder(tmp_path / "bad" / "train", classes=("cat", "dog"), per_class=1)
    with pytest.raises(DiscoZooError, match="train/ and val/"):
        CLASSIFICATION.train_data(str(tmp_path / "bad"), input_size=16, batch_size=4, seed=0)
    write_image_folder(tmp_path / "bad" / "val", classes=("cat", "emu"), per_class=1)
    with pytest.raises(DiscoZooError, match="class_names"):
        CLASSIFICATION.train_data(str(tmp_path / "bad"), input_size=16, batch_size=4, seed=0)


def test_writers_record_the_tasks_metadata_and_it_loads_back():
    info = CLASSIFICATION.train_data("digits", input_size=8, batch_size=16, seed=0, limit=4).info
    resnet = model_metadata(CLASSIFICATION, info, build_model("resnet18", num_classes=10), 32, "digits")
    vit = model_metadata(CLASSIFICATION, info, build_model("vit_tiny_disco_2node", num_classes=10), 32, "digits")
    assert resnet["fixed_input_size"] is False and vit["fixed_input_size"] is True  # timm's own pretrained_cfg
    assert resnet["task"] == "classification" and resnet["tag"] == "digits" and resnet["input_size"] == [3, 32, 32]
    files = [{"name": "model.safetensors", "size": 1, "sha256": "0" * 64}]
    config = FolderConfig.from_dict({"arch": "resnet18", "kind": "dense", "args": {"num_classes": 10}, "files": files,
                                     **resnet})
    assert task_of(config) is CLASSIFICATION
    assert (config.dataset, config.input_size, config.mean, config.interpolation, config.crop_pct) == (
        "digits", (3, 32, 32), (DIGITS_MEAN,) * 3, "bilinear", 1.0)
    assert config.class_names == tuple(str(d) for d in range(10))


def test_fp16_storage_is_decided_by_the_tasks_headline_metric():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    loader = digits_loaders(size=8, batch_size=64, limit=64)["test"]
    metrics = split_metrics(CLASSIFICATION, net, {"val": loader, "test": loader})
    assert storage_decision("fp32", CLASSIFICATION, net, loader, dict(metrics)) == "fp32"
    forced = dict(metrics)
    assert storage_decision("fp16", CLASSIFICATION, net, loader, forced) == "fp16"
    assert forced["test_top1_fp32"] == metrics["test_top1"]
    quantised = dict(metrics)
    assert storage_decision("int8", CLASSIFICATION, net, loader, quantised) == "int8"
    assert quantised["test_top1_fp32"] == metrics["test_top1"] and "test_top1" in quantised
    with pytest.raises(DiscoZooError, match="--storage"):
        storage_decision("int4", CLASSIFICATION, net, loader, dict(metrics))
