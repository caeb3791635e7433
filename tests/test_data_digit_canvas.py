"""The embedded segmentation canvases: real digits, exact masks, disjoint splits, seeded,
written atomically as a mask folder."""
import numpy as np
import pytest
from PIL import Image

from disco_zoo.data.digit_canvas import (CANVAS_CLASSES, CANVAS_NAME, INK_THRESHOLD, _upscaled_ink, digit_pools,
                                         embedded_canvas_folder, make_canvas, write_canvas_folder)
from disco_zoo.tasks import get_task

SMALL = {"train": 3, "val": 2, "test": 2}


def test_train_val_and_test_draw_on_disjoint_digit_scans():
    pools = digit_pools()
    train, val, test = (set(pools[s].tolist()) for s in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 1797
    assert np.array_equal(digit_pools(0)["test"], pools["test"]) and not np.array_equal(digit_pools(1)["test"], pools["test"])


def _redrawn_mask(seed, scans, labels, pool, size):
    """(mask, inked pixels summed over digits) by replaying the generator's draws: each
    digit's inked window labelled, later digits written over earlier ones."""
    rng = np.random.default_rng(seed)
    rng.uniform(0.0, 0.35, size=(2, 3)), rng.uniform(0, 2 * np.pi)  # the background's draws
    mask, inked_total = np.zeros((size, size), dtype=np.uint8), 0
    for _ in range(rng.integers(3, 7)):
        index = int(rng.choice(pool))
        side = int(rng.integers(int(0.2 * size), int(0.45 * size) + 1))
        top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        inked = _upscaled_ink(scans[index], side) >= INK_THRESHOLD
        mask[top:top + side, left:left + side][inked] = 1 + int(labels[index])
        inked_total += int(inked.sum())
        rng.uniform(0.55, 1.0, size=3)
    return mask, inked_total


def test_digits_are_labelled_exactly_where_their_ink_is_and_later_ones_occlude_earlier_ones():
    from sklearn.datasets import load_digits

    digits = load_digits()
    pool = np.array([int(np.flatnonzero(digits.target == d)[0]) for d in (0, 1)])  # a 0 and a 1
    overlapping = 0
    for seed in range(6):
        image, mask = make_canvas(np.random.default_rng(seed), digits.images, digits.target, pool, size=48)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8 and mask.dtype == np.uint8
        expected, inked_total = _redrawn_mask(seed, digits.images, digits.target, pool, 48)
        assert np.array_equal(mask, expected)
        overlapping += int(inked_total > np.count_nonzero(mask))
    assert overlapping >= 3  # so the equality above also checks which digit is on top


def test_the_folder_is_written_in_the_mask_folder_layout_and_is_seeded(tmp_path):
    first = write_canvas_folder(tmp_path / "a", size=32, counts=SMALL)
    second = write_canvas_folder(tmp_path / "b", size=32, counts=SMALL)
    assert (first / "classes.txt").read_text().split() == list(CANVAS_CLASSES)
    for split, count in SMALL.items():
        images = sorted(p.name for p in (first / split / "images").iterdir())
        assert images == sorted(p.name for p in (first / split / "masks").iterdir()) and len(images) == count
        for name in images:
            assert (first / split / "images" / name).read_bytes() == (second / split / "images" / name).read_bytes()
        mask = np.array(Image.open(first / split / "masks" / images[0]))
        assert mask.shape == (32, 32) and mask.max() <= 10
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(KeyError):
        write_canvas_folder(tmp_path / "c", size=32, counts={"train": 1, "holdout": 1})  # no such split
    assert list(tmp_path.iterdir()) == []


def test_the_embedded_set_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    import disco_zoo.data.digit_canvas as canvas

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(canvas, "CANVAS_COUNTS", SMALL)
    folder = embedded_canvas_folder(32)
    assert folder.parent == tmp_path and (folder / "test" / "masks" / "00001.png").is_file()
    stamp = (folder / "classes.txt").stat().st_mtime_ns
    assert embedded_canvas_folder(32) == folder and (folder / "classes.txt").stat().st_mtime_ns == stamp
    assert get_task("segmentation").embedded_dataset == CANVAS_NAME
