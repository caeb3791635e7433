"""Super-resolution: the Y-channel PSNR/SSIM on hand-made images, the HR folder format
with bicubic or given LR images, aligned random patches, and the EDSR/ESPCN models."""
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from disco_zoo.data import sr_images
from disco_zoo.data.sr_images import RandomPatches, make_lr, read_pairs, write_hr_folder
from disco_zoo.errors import DiscoZooError
from disco_zoo.registry import build_model, get_entry
from disco_zoo.store import FolderConfig
from disco_zoo.tasks import get_task, task_of
from disco_zoo.tasks.base import EvalSplit
from disco_zoo.tasks.super_resolution import PSNR_CAP_DB, SRTarget, floor_scores, luma

SR = get_task("super_resolution")


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (uint8), so bicubic resampling is not trivially exact."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _target(image: torch.Tensor, scale: int = 2) -> SRTarget:
    return SRTarget(image, scale)


# -- metric -----------------------------------------------------------------------------


def test_luma_is_bt601_on_0_1_rgb():
    assert luma(np.zeros((3, 2, 2)))[0, 0] == pytest.approx(16 / 255)
    assert luma(np.ones((3, 2, 2)))[0, 0] == pytest.approx(235 / 255)


def test_identical_images_score_the_cap_and_ssim_one():
    image = torch.rand(1, 3, 20, 24)
    scores = SR.score([image], [_target(image)])
    assert scores == {"psnr": PSNR_CAP_DB, "ssim": pytest.approx(1.0)}


def test_a_constant_offset_gives_the_psnr_worked_by_hand():
    torch.manual_seed(0)
    target = torch.rand(1, 3, 20, 24) * 0.8
    offset = 4 / 255  # every channel: Y moves by offset * (65.481 + 128.553 + 24.966) / 255
    by_hand = -10 * math.log10((offset * 219 / 255) ** 2)  # data range 1
    scores = SR.score([target + offset], [_target(target)])
    assert scores["psnr"] == pytest.approx(by_hand, abs=1e-6)
    assert scores["ssim"] < 1.0


def test_the_border_of_scale_pixels_is_shaved_and_images_are_averaged():
    target = torch.full((1, 3, 20, 20), 0.5)
    spoiled = target.clone()
    spoiled[..., :3, :] = 1.0  # wrong only in the top 3 rows
    assert SR.score([spoiled], [_target(target, scale=3)])["psnr"] == PSNR_CAP_DB
    assert SR.score([spoiled], [_target(target, scale=2)])["psnr"] < 40
    two = SR.score([spoiled, target], [_target(target, 2), _target(target, 2)])
    assert two["psnr"] == pytest.approx((SR.score([spoiled], [_target(target)])["psnr"] + PSNR_CAP_DB) / 2)


def test_predictions_are_clamped_8_bit_images_and_batches_join_as_lists():
    outputs = [[[[-0.5, 0.1], [1.7, 0.5004]]]]  # as the root rank reports them
    assert SR.predictions(outputs).flatten().tolist() == pytest.approx([0.0, 26 / 255, 1.0, 128 / 255])
    a, b = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 6, 6)
    assert [t.shape for t in SR.concat([a, b])] == [a.shape, b.shape]
    assert SR.concat([_target(a), _target(b)]) == [_target(a), _target(b)]
    with pytest.raises(DiscoZooError, match="1 predictions for 2 targets"):
        SR.score([a], [_target(a), _target(b)])
    with pytest.raises(DiscoZooError, match="scale is not the data's"):
        SR.score([a], [_target(b)])


def test_the_floor_is_bicubic_upsampling_scored_alike():
    hr, lr = make_lr(_photo(40, 48), 2)
    split = EvalSplit([sr_images.to_tensor(lr)], [_target(sr_images.to_tensor(hr))], "hand-made")
    upsampled = sr_images.to_tensor(sr_images.bicubic_upsample(lr, hr.shape[:2]))
    assert floor_scores(split) == SR.score([upsampled], list(split.targets))
    flat = np.full((16, 16, 3), 77, np.uint8)  # bicubic of a constant image is exact
    split = EvalSplit([sr_images.to_tensor(flat[::2, ::2])], [_target(sr_images.to_tensor(flat))], "flat")
    assert floor_scores(split)["psnr"] == PSNR_CAP_DB


def test_training_loss_is_l1_and_a_scale_mismatch_is_named():
    net = build_model("espcn_x2")
    lr, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    assert torch.equal(SR.training_loss(net, lr, hr), F.l1_loss(net(lr), hr))
    with pytest.raises(DiscoZooError, match="--arg scale"):
        SR.training_loss(net, lr, torch.rand(2, 3, 24, 24))


# -- data -------------------------------------------------------------------------------


def _folder(root, sizes=((41, 50), (36, 36)), splits=("train", "test")):
    images = {split: {f"im{i}": _photo(*size, seed=i) for i, size in enumerate(sizes)} for split in splits}
    return write_hr_folder(root, images)


def test_hr_folder_pairs_are_bicubic_lr_of_the_cropped_hr(tmp_path):
    root = _folder(tmp_path / "set")
    assert sorted(p.name for p in (root / "train").iterdir()) == ["im0.png", "im1.png"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left beside it
    pair = read_pairs(root, "train", 2)[0]
    assert pair.name == "im0" and pair.hr.shape == (40, 50, 3) and pair.lr.shape == (20, 25, 3) and pair.scale == 2
    expected = Image.fromarray(pair.hr).resize((25, 20), Image.BICUBIC)
    assert np.array_equal(pair.lr, np.asarray(expected))


def test_a_given_lr_folder_is_used_and_checked(tmp_path):
    root = _folder(tmp_path / "set")
    (root / "test_LR_x2").mkdir()
    Image.fromarray(_photo(20, 25)).save(root / "test_LR_x2" / "im0.png")
    with pytest.raises(DiscoZooError, match=r"test_LR_x2 does not match .*no LR for \[im1\]"):
        read_pairs(root, "test", 2)
    Image.fromarray(_photo(18, 18)).save(root / "test_LR_x2" / "im1.png")
    pairs = read_pairs(root, "test", 2)
    assert np.array_equal(pairs[0].lr, _photo(20, 25))
    Image.fromarray(_photo(17, 18)).save(root / "test_LR_x2" / "im1.png")
    with pytest.raises(DiscoZooError, match=r"LR/HR scale mismatch: .*im1.png is 18x17 .*needs a 18x18 LR"):
        read_pairs(root, "test", 2)


def test_bad_folders_and_too_small_images_are_named(tmp_path):
    with pytest.raises(DiscoZooError, match="train/ and test/"):
        read_pairs(tmp_path, "train", 2)
    (tmp_path / "train").mkdir()
    with pytest.raises(DiscoZooError, match="holds no images"):
        read_pairs(tmp_path, "train", 2)
    root = _folder(tmp_path / "small", sizes=((12, 30),))
    with pytest.raises(DiscoZooError, match=r"im0.png is 30x12: at x2 its LR would be under 8 px"):
        read_pairs(root, "train", 2)
    pairs = read_pairs(_folder(tmp_path / "ok"), "train", 2)
    with pytest.raises(DiscoZooError, match="smaller than the 20 px LR patch"):
        RandomPatches(pairs, 20, 4, 2, seed=0)


def test_random_patches_are_aligned_seeded_and_fill_an_epoch(tmp_path):
    root = _folder(tmp_path / "set", sizes=((40, 48), (32, 36)))
    (root / "train_LR_x2").mkdir()
    for path in sorted((root / "train").iterdir()):  # nearest LR: each LR pixel is an HR pixel
        Image.fromarray(np.asarray(Image.open(path))[::2, ::2]).save(root / "train_LR_x2" / path.name)
    pairs = read_pairs(root, "train", 2)
    patches = RandomPatches(pairs, 6, 10, 4, seed=3)
    batches = list(patches)
    assert len(patches) == len(batches) == 3 and [len(b[0]) for b in batches] == [4, 4, 2]
    for lr, hr in batches:
        assert lr.shape[-2:] == (6, 6) and hr.shape[-2:] == (12, 12)
        # a flip or rotation of the HR patch keeps LR pixel (i, j) at one of HR (2i, 2j)'s 2x2 corners
        corners = torch.stack([hr[..., a::2, b::2] for a in (0, 1) for b in (0, 1)])
        assert bool(((corners - lr).abs() < 1e-6).any(0).all())
    again = list(RandomPatches(pairs, 6, 10, 4, seed=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], next(iter(patches))[0])  # the next epoch draws new patches


def test_train_data_and_eval_split_read_one_folder_at_the_models_scale(tmp_path):
    root = _folder(tmp_path / "set")
    data = SR.train_data(str(root), 8, 4, seed=0, limit=6)
    assert data.model_args == {"scale": 2} and data.info.name == "set" and data.info.std == (1.0, 1.0, 1.0)
    assert len(data.loaders["train"]) == 2 and data.loaders["val"] is data.loaders["test"]
    assert [b[0].shape for b in data.loaders["test"]] == [(1, 3, 20, 25), (1, 3, 18, 18)]
    config = FolderConfig(arch="espcn_x2", kind="dense", tag="set", args={"scale": 2}, files=(),
                          task="super_resolution", mean=(0.0,) * 3, std=(1.0,) * 3)
    split = SR.eval_split(str(root), config)
    assert len(split) == 2 and [t.scale for t in split.targets] == [2, 2]
    assert split.targets[0].hr.shape == (1, 3, 40, 50)
    x3 = SR.eval_split(str(root), dataclasses.replace(config, args={"scale": 3}))
    assert x3.inputs[0].shape == (1, 3, 13, 16) and x3.targets[0].scale == 3
    with pytest.raises(DiscoZooError, match="mean/std must be 0/1"):
        SR.eval_split(str(root), dataclasses.replace(config, mean=(0.5,) * 3))
    with pytest.raises(DiscoZooError, match="no such folder"):
        SR.eval_split(str(tmp_path / "nope"), config)
    scores = SR.evaluate(build_model("espcn_x2"), data.loaders["test"])
    assert set(scores) == {"psnr", "ssim"} and 0 < scores["psnr"] < PSNR_CAP_DB


def test_the_embedded_photographs_are_written_once_and_held_out_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv(sr_images.DATA_DIR_ENV, str(tmp_path))
    root = sr_images.ensure_embedded()
    assert root == tmp_path / "photos"
    names = {split: sorted(p.stem for p in (root / split).iterdir()) for split in ("train", "val", "test")}
    assert names == {"train": sorted(sr_images.TRAIN_IMAGES), "val": sorted(sr_images.VAL_IMAGES),
                     "test": sorted(sr_images.TEST_IMAGES)}
    assert not set(names["train"]) & (set(names["test"]) | set(names["val"]))
    stamp = (root / "test" / "coffee.png").stat().st_mtime_ns
    assert sr_images.ensure_embedded() == root and (root / "test" / "coffee.png").stat().st_mtime_ns == stamp


# -- models -----------------------------------------------------------------------------


@pytest.mark.parametrize("arch, params", [("edsr_baseline_x2", 1_369_859), ("espcn_x2", 26_796)])
def test_models_double_the_size_and_carry_no_constant_buffers(arch, params):
    entry = get_entry(arch)
    assert entry.task == "super_resolution" and entry.kwargs == {"scale": 2}
    assert task_of(entry) is SR
    net = build_model(arch)
    assert sum(p.numel() for p in net.parameters()) == params  # the papers' architectures, counted by hand
    assert not list(net.buffers())
    assert net(torch.rand(1, 3, 9, 11)).shape == (1, 3, 18, 22)
    assert net.pretrained_cfg["scale"] == 2 and net.pretrained_cfg["fixed_input_size"] is False
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in net.modules())


def test_disco_variants_are_registered_for_super_resolution():
    for arch, dense in (("edsr_baseline_x2_disco_2node", "edsr_baseline_x2"), ("espcn_x2_disco_2node", "espcn_x2")):
        entry = get_entry(arch)
        assert entry.task == "super_resolution" and entry.kwargs == {"dense": dense, "nodes": 2}
    with pytest.raises(DiscoZooError, match="scale 2 or 3"):
        build_model("edsr_baseline_x2", scale=4)


def test_fp16_storage_is_chosen_when_psnr_moves_less_than_its_tolerance(tmp_path):
    from disco_zoo.commands.common import storage_decision

    data = SR.train_data(str(_folder(tmp_path / "set")), 8, 4, seed=0, limit=4)
    torch.manual_seed(0)
    net = build_model("espcn_x2")
    metrics = {f"test_{k}": v for k, v in SR.evaluate(net, data.loaders["test"]).items()}
    fp32 = metrics["test_psnr"]
    assert storage_decision("auto", SR, net, data.loaders["test"], metrics) == "fp16"
    assert metrics["test_psnr_fp32"] == fp32 and abs(metrics["test_psnr"] - fp32) <= SR.primary_metric.tolerance


def test_run_summary_gives_the_upscaled_size_and_range():
    import torch

    from disco_zoo.tasks import get_task

    task = get_task("super_resolution")
    out = torch.linspace(-0.5, 1.5, 3 * 4 * 6).reshape(1, 3, 4, 6).repeat(2, 1, 1, 1)
    summary = task.summary(out)
    assert summary == {"output_shape": [3, 4, 6], "min": 0.0, "max": 1.0}  # clamped to [0, 1]
    assert "3x4x6" in task.summary_line(summary)
