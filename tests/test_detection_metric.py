"""COCO box AP through pycocotools on hand-made cases whose values the IoU thresholds fix."""
import pytest
import torch

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks import find_metric, get_task
from disco_zoo.tasks.detection_metric import coco_box_ap

DET = get_task("detection")
TARGETS = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0], [60.0, 20.0, 90.0, 40.0]]), "labels": torch.tensor([1, 2])},
           {"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]


def _perfect():
    return [{"boxes": t["boxes"].clone(), "labels": t["labels"].clone(), "scores": torch.ones(len(t["labels"]))}
            for t in TARGETS]


def _iou(a, b):
    from torchvision.ops import box_iou

    return float(box_iou(torch.tensor([a]), torch.tensor([b]))[0, 0])


def test_perfect_detections_score_one():
    assert DET.score(_perfect(), TARGETS) == pytest.approx({"box_ap": 1.0, "ap50": 1.0, "ap75": 1.0})


def test_a_box_at_iou_062_passes_three_of_the_ten_thresholds():
    """IoU 0.62 matches at thresholds 0.50, 0.55 and 0.60 only: AP50 1, AP75 0, AP 3/10."""
    truth, shifted = [0.0, 0.0, 100.0, 100.0], [0.0, 23.5, 100.0, 123.5]
    assert 0.6 < _iou(truth, shifted) < 0.65
    targets = [{"boxes": torch.tensor([truth]), "labels": torch.tensor([4])}]
    predictions = [{"boxes": torch.tensor([shifted]), "labels": torch.tensor([4]), "scores": torch.tensor([0.9])}]
    assert coco_box_ap(predictions, targets) == pytest.approx({"box_ap": 0.3, "ap50": 1.0, "ap75": 0.0})


def test_no_detections_score_zero_and_no_truth_is_refused():
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)}] * 2
    assert DET.score(empty, TARGETS) == {"box_ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with pytest.raises(DiscoZooError, match="no boxes"):
        DET.score(empty, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2)
    with pytest.raises(DiscoZooError, match="1 predictions for 2 targets"):
        DET.score(empty[:1], TARGETS)


def test_a_wrong_label_is_a_miss_and_pycocotools_prints_nothing(capsys):
    wrong = _perfect()
    wrong[1]["labels"] = torch.tensor([2])  # image 2's box called category 2: category 1 loses a box, 2 gains an FP
    scores = DET.score(wrong, TARGETS)
    assert capsys.readouterr().out == ""
    assert 0.0 < scores["box_ap"] < 1.0 and scores["box_ap"] == pytest.approx(scores["ap50"])


def test_metrics_and_concat():
    assert [m.name for m in DET.metrics] == ["box_ap", "ap50", "ap75"] and find_metric("ap50").label == "AP50"
    assert DET.concat([[1, 2], [3]]) == [1, 2, 3]
