"""ImageFolder loading with ImageNet preprocessing, on PNGs written here."""
import numpy as np
import pytest
import torch
from PIL import Image

from disco_zoo.data.image_folder import image_folder_dataset, image_folder_loader
from disco_zoo.errors import DiscoZooError


def write_folder(root, classes=("cat", "dog"), per_class=3):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((40, 50, 3), 60 * c + 20 * i, dtype=np.uint8)
            pixels[..., 2] = rng.integers(0, 255, (40, 50))
            mode = "L" if i == 0 else "RGB"  # a greyscale file must load as 3 channels too
            Image.fromarray(pixels[..., 0] if mode == "L" else pixels).save(root / name / f"{i}.png")


def test_eval_preprocessing(tmp_path):
    write_folder(tmp_path)
    ds = image_folder_dataset(tmp_path, size=32)
    assert ds.classes == ["cat", "dog"] and len(ds) == 6
    image, label = ds[4]
    assert image.shape == (3, 32, 32) and label == 1
    # a constant red channel of value v normalises to (v/255 - mean) / std
    assert image[0].mean().item() == pytest.approx((80 / 255 - 0.485) / 0.229, abs=1e-4)
    images, labels = next(iter(image_folder_loader(tmp_path, size=32, batch_size=6)))
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_train_loader_is_seeded(tmp_path):
    write_folder(tmp_path)
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
