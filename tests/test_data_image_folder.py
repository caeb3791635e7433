"""ImageFolder loading with ImageNet (or a model's own) preprocessing, on PNGs written here."""
import pytest
import torch

from disco_zoo.data.image_folder import check_classes, image_folder_dataset, image_folder_loader
from disco_zoo.errors import DiscoZooError
from helpers import write_image_folder


def test_eval_preprocessing(tmp_path):
    write_image_folder(tmp_path)
    ds = image_folder_dataset(tmp_path, size=32)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    image, label = ds[4]
    assert image.shape == (3, 32, 32) and label == 1
    # a constant red channel of value v normalises to (v/255 - mean) / std
    assert image[0].mean().item() == pytest.approx((80 / 255 - 0.485) / 0.229, abs=1e-4)
    images, labels = next(iter(image_folder_loader(tmp_path, size=32, batch_size=6)))
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_a_models_own_preprocessing_is_applied(tmp_path):
    write_image_folder(tmp_path)
    ds = image_folder_dataset(tmp_path, size=16, mean=(0.3, 0.3, 0.3), std=(0.4, 0.4, 0.4), crop_pct=1.0,
                              interpolation="bicubic")
    image, _ = ds[4]
    assert image.shape == (3, 16, 16)
    assert image[0].mean().item() == pytest.approx((80 / 255 - 0.3) / 0.4, abs=1e-4)
    with pytest.raises(DiscoZooError, match="interpolation"):
        image_folder_dataset(tmp_path, size=16, interpolation="sharpest")


def test_limit_keeps_the_first_images_and_the_classes(tmp_path):
    write_image_folder(tmp_path)
    loader = image_folder_loader(tmp_path, size=8, batch_size=8, limit=4)
    assert len(loader.dataset) == 4 and loader.dataset.classes == ["cat", "dog"]
    assert next(iter(loader))[1].tolist() == [0, 0, 0, 1]


def test_train_loader_is_seeded(tmp_path):
    write_image_folder(tmp_path)
    labels = lambda: next(iter(image_folder_loader(tmp_path, 24, 6, train=True, seed=1)))[1]  # noqa: E731
    torch.manual_seed(0)
    a = labels()
    torch.manual_seed(0)
    assert torch.equal(a, labels())


def test_bad_folder(tmp_path):
    with pytest.raises(DiscoZooError, match="does not exist"):
        image_folder_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiscoZooError, match="ImageFolder"):
        image_folder_dataset(tmp_path / "empty")


def test_classes_must_be_the_models():
    check_classes(["cat", "dog"], ("cat", "dog"), "f", "m")
    with pytest.raises(DiscoZooError, match=r"class_names of m .*missing \[bird\], unknown \[dog\]"):
        check_classes(["cat", "dog"], ("bird", "cat"), "f", "m")
    # without names, the count must fit the model's outputs
    check_classes(["a", "b"], None, "f", "m", expected_count=2)
    with pytest.raises(DiscoZooError, match="has 2 classes but m has 3 outputs"):
        check_classes(["a", "b"], None, "f", "m", expected_count=3)
