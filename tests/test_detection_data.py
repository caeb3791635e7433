"""The embedded detection canvases (real digits, exact visible boxes, disjoint splits,
seeded, written atomically as a COCO folder) and the COCO loader's load-time checks."""
import json

import numpy as np
import pytest
import torch

from disco_zoo.data.coco_folder import (CocoFolder, check_min_size, coco_folder_loader, read_annotations)
from disco_zoo.data.digit_boxes import (BOXES_CATEGORIES, embedded_boxes_folder, make_box_canvas, visible_boxes,
                                        write_boxes_folder)
from disco_zoo.data.digit_canvas import digit_pools
from disco_zoo.errors import DiscoZooError
from helpers import write_coco_folder

SMALL = {"train": 3, "val": 2, "test": 2}


def test_boxes_are_the_tight_boxes_of_visible_ink_and_hidden_digits_are_dropped():
    instances = np.full((10, 12), -1, dtype=np.int16)
    instances[1:6, 2:7] = 0  # digit 7, partly covered below
    instances[4:9, 5:11] = 1  # digit 3 over it
    instances[3, 2] = -1  # no ink at one corner of the first: its box still reaches column 2 through rows 1-2, 4-5
    instances[0:2, 0:2] = 3  # paste 2 is fully occluded by paste 3 (never visible)
    boxes, labels, areas = visible_boxes(instances, [7, 3, 5, 1])
    assert boxes.tolist() == [[2, 1, 7, 6], [5, 4, 11, 9], [0, 0, 2, 2]]
    assert labels.tolist() == [7, 3, 1]
    assert areas.tolist() == [int((instances == 0).sum()), 30, 4]


def test_a_generated_canvas_has_one_exact_box_per_visible_digit():
    from sklearn.datasets import load_digits

    digits = load_digits()
    pool = digit_pools()["train"]
    for seed in range(8):
        canvas = make_box_canvas(np.random.default_rng(seed), digits.images, digits.target, pool, size=64)
        assert canvas.image.shape == (64, 64, 3) and 1 <= len(canvas.boxes) <= 6
        visible = sorted(int(k) for k in np.unique(canvas.instances) if k >= 0)
        assert len(visible) == len(canvas.boxes)
        for k, box in zip(visible, canvas.boxes):
            ys, xs = np.nonzero(canvas.instances == k)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert set(canvas.labels.tolist()) <= set(range(10))


def test_the_folder_is_coco_seeded_and_its_splits_use_disjoint_scans(tmp_path):
    first = write_boxes_folder(tmp_path / "a", size=64, counts=SMALL)
    second = write_boxes_folder(tmp_path / "b", size=64, counts=SMALL)
    for split, count in SMALL.items():
        text = (first / "annotations" / f"instances_{split}.json").read_text()
        assert text == (second / "annotations" / f"instances_{split}.json").read_text()
        document = json.loads(text)
        assert document["categories"] == list(BOXES_CATEGORIES) and len(document["images"]) == count
        assert all(a["iscrowd"] == 0 and 1 <= a["category_id"] <= 10 and a["area"] > 0 for a in document["annotations"])
        for image in document["images"]:
            png = first / split / "images" / image["file_name"]
            assert png.read_bytes() == (second / split / "images" / image["file_name"]).read_bytes()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left
    pools = digit_pools()
    assert not set(pools["train"]) & set(pools["test"]) and not set(pools["val"]) & set(pools["test"])


def test_coco_round_trip_gives_torchvision_targets(tmp_path):
    root = write_boxes_folder(tmp_path / "c", size=64, counts=SMALL)
    document = json.loads((root / "annotations" / "instances_val.json").read_text())
    folder = CocoFolder(root, "val")
    image, target = folder[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    expected = [a for a in document["annotations"] if a["image_id"] == document["images"][0]["id"]]
    assert target["boxes"].tolist() == [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in expected)]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [a["category_id"] for a in expected]
    assert folder.annotations.class_names == ("background",) + tuple(str(d) for d in range(10))
    images, targets = next(iter(coco_folder_loader(root, "train", batch_size=2)))
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 2


def test_the_embedded_set_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    import disco_zoo.data.digit_boxes as boxes

    monkeypatch.setenv("DISCO_ZOO_CACHE", str(tmp_path))
    monkeypatch.setattr(boxes, "BOXES_COUNTS", SMALL)
    folder = embedded_boxes_folder(64)
    stamp = (folder / "annotations" / "instances_test.json").stat().st_mtime_ns
    assert folder.parent == tmp_path and embedded_boxes_folder(64) == folder
    assert (folder / "annotations" / "instances_test.json").stat().st_mtime_ns == stamp


def _break(root, change):
    path = root / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0].update(bbox=[20, 20, 30, 5]), r"box \[20, 20, 30, 5\] lies outside its image"),
    (lambda d: d["annotations"][0].update(category_id=42), "unknown category id 42"),
    (lambda d: d["images"][0].update(file_name="gone.png"), "gone.png is missing"),
    (lambda d: d.update(annotations=[]), "empty annotation list"),
    (lambda d: d["annotations"][0].update(image_id=99), "image id 99, which the file does not list"),
    (lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 3]), "box of no area"),
    (lambda d: d["images"][0].update(width=31), "is 32x24 but .* says 31x24"),
    (lambda d: d["categories"].append({"id": 3, "name": "again"}), "category id 3 appears twice"),
    (lambda d: d["annotations"][0].pop("bbox"), "annotation has no 'bbox'"),
])
def test_each_bad_input_is_one_line_naming_the_file(tmp_path, change, message):
    root = write_coco_folder(tmp_path / "data")
    _break(root, change)
    with pytest.raises(DiscoZooError, match=message) as err:
        read_annotations(root, "train")
    assert "\n" not in str(err.value)


def test_malformed_json_and_missing_files_are_named(tmp_path):
    root = write_coco_folder(tmp_path / "data")
    (root / "annotations" / "instances_train.json").write_text('{"images": [')
    with pytest.raises(DiscoZooError, match="instances_train.json is not valid JSON"):
        read_annotations(root, "train")
    with pytest.raises(DiscoZooError, match="instances_test.json is missing"):
        read_annotations(root, "test")


def test_images_too_small_for_the_strides_are_refused():
    check_min_size(128, 64, "x")
    with pytest.raises(DiscoZooError, match="--input-size 32: images of side 32 are too small.*at least 64"):
        check_min_size(32, 64, "--input-size 32")
