"""The mask-folder loader a user points --data at: pairs by stem, exact masks, and one
clear line naming the file for every kind of bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from disco_zoo.data.mask_folder import MaskFolder, channel_stats, mask_folder_loader, read_class_names
from disco_zoo.errors import DiscoZooError
from helpers import write_mask_folder

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_pairs_load_as_normalised_images_and_exact_masks(tmp_path):
    folder = write_mask_folder(tmp_path)
    assert read_class_names(tmp_path) == ("background", "a", "b")
    data = MaskFolder(folder, 3, MEAN, STD)
    image, mask = data[0]
    assert image.shape == (3, 32, 64) and mask.shape == (32, 64) and mask.dtype == torch.int64
    assert mask[0].eq(255).all() and mask[1:, :32].eq(1).all() and mask[1:, 32:].eq(2).all()
    assert image[0, 5, 5] == pytest.approx((200 / 255 - 0.5) / 0.25) and image[1, 5, 5] == pytest.approx(-2.0)
    assert data.size == (32, 64)


def test_a_training_flip_mirrors_image_and_mask_together(tmp_path):
    folder = write_mask_folder(tmp_path, count=8)
    torch.manual_seed(0)
    loader = mask_folder_loader(folder, 3, MEAN, STD, batch_size=8, train=True, flip=True)
    images, masks = next(iter(loader))
    flipped = masks[:, 5, 0] == 2
    assert 0 < int(flipped.sum()) < 8  # some flipped, some not
    for image, mask in zip(images, masks):  # red (channel 0) is wherever class 1 is, flipped or not
        assert torch.equal(image[0] > 0, mask == 1)
    assert not mask_folder_loader(folder, 3, MEAN, STD, train=False, flip=True).dataset.flip


def test_stems_without_a_partner_are_named(tmp_path):
    folder = write_mask_folder(tmp_path)
    (folder / "masks" / "1.png").unlink()
    with pytest.raises(DiscoZooError, match=r"masks has no mask for 1 image\(s\) .*\(1\); add masks/<stem>.png"):
        MaskFolder(folder, 3, MEAN, STD)
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(folder / "masks" / "1.png")
    Image.fromarray(np.zeros((32, 64), np.uint8)).save(folder / "masks" / "stray.png")
    with pytest.raises(DiscoZooError, match=r"1 mask\(s\) with no image .*\(stray\)"):
        MaskFolder(folder, 3, MEAN, STD)


def test_a_mask_of_another_size_than_its_image_is_refused(tmp_path):
    folder = write_mask_folder(tmp_path)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "masks" / "2.png")
    with pytest.raises(DiscoZooError, match=r"2.png is 32x32 but its image .*2.png is 64x32"):
        MaskFolder(folder, 3, MEAN, STD)


def test_an_image_side_the_model_cannot_take_is_refused(tmp_path):
    folder = write_mask_folder(tmp_path, size=(40, 64))
    with pytest.raises(DiscoZooError, match=r"0.png is 64x40; the model takes sides that are multiples of 32"):
        MaskFolder(folder, 3, MEAN, STD, size_divisor=32)
    assert len(MaskFolder(folder, 3, MEAN, STD, size_divisor=8)) == 3


def test_images_of_different_sizes_in_one_split_are_refused(tmp_path):
    folder = write_mask_folder(tmp_path)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "images" / "2.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "masks" / "2.png")
    with pytest.raises(DiscoZooError, match=r"2.png is 64x64 but .*0.png is 64x32; .*one size"):
        MaskFolder(folder, 3, MEAN, STD)


def test_a_mask_value_outside_the_classes_is_refused_but_255_is_ignored(tmp_path):
    folder = write_mask_folder(tmp_path)
    bad = np.zeros((32, 64), np.uint8)
    bad[3, 3], bad[4, 4] = 7, 255
    Image.fromarray(bad).save(folder / "masks" / "1.png")
    data = MaskFolder(folder, 3, MEAN, STD)
    with pytest.raises(DiscoZooError, match=r"1.png holds class id\(s\) 7 outside 0..2"):
        data[1]
    assert MaskFolder(folder, 8, MEAN, STD)[1][1][4, 4] == 255


def test_an_rgb_mask_is_refused(tmp_path):
    folder = write_mask_folder(tmp_path)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(folder / "masks" / "0.png")
    with pytest.raises(DiscoZooError, match=r"0.png is a RGB image; a mask is a single-channel"):
        MaskFolder(folder, 3, MEAN, STD)[0]


def test_channel_stats_are_the_pixels_mean_and_std(tmp_path):
    folder = write_mask_folder(tmp_path)
    mean, std = channel_stats(folder)
    # red: 200/255 on the left half (rows 1..), 0 elsewhere; row 0 is class 255 but black (0) here
    red = np.zeros((32, 64)); red[1:, :32] = 200 / 255
    assert mean[0] == pytest.approx(red.mean(), abs=1e-4) and std[0] == pytest.approx(red.std(), abs=1e-4)
    assert mean[2] == 0.0
