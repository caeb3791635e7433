"""mIoU and pixel accuracy from one confusion matrix, on hand-worked masks."""
import pytest
import torch

from disco_zoo.tasks import find_metric, get_task
from disco_zoo.tasks.segmentation import IGNORE_INDEX, confusion_matrix, floor_scores, scores_from_confusion

SEG = get_task("segmentation")

# target / prediction, 2 x 4 pixels, classes 0..2:
#   target      prediction
#   0 0 1 1     0 1 1 1
#   2 2 2 0     2 2 0 0
# class 0: TP 2 (the two 0s at (0,0), (1,3)), FP 1 ((1,2)), FN 1 ((0,1)) -> IoU 2/4
# class 1: TP 2, FP 1 ((0,1)), FN 0 -> IoU 2/3
# class 2: TP 2, FP 0, FN 1 ((1,2)) -> IoU 2/3
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 0]]])
PREDICTION = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, 0]]])


def test_hand_worked_masks_give_their_ious():
    scores = SEG.score(PREDICTION, TARGET)
    assert scores["miou"] == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)
    assert scores["pixel_acc"] == pytest.approx(6 / 8)
    assert confusion_matrix(PREDICTION, TARGET, 3).tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]


def test_ignored_pixels_count_for_nothing_whatever_is_predicted_there():
    target = TARGET.clone()
    target[0, 0, 1] = IGNORE_INDEX  # the one pixel where class 0 was predicted as 1
    scores = SEG.score(PREDICTION, target)
    # class 0: TP 2, FP 1, FN 0 -> 2/3; class 1: TP 2, FP 0 (its one FP was the ignored pixel) -> 1; class 2: 2/3
    assert scores["miou"] == pytest.approx((2 / 3 + 2 / 2 + 2 / 3) / 3)
    assert scores["pixel_acc"] == pytest.approx(6 / 7)


def test_a_class_absent_from_target_and_prediction_is_skipped_not_scored():
    confusion = confusion_matrix(PREDICTION, TARGET, 5)  # classes 3 and 4 appear nowhere
    assert scores_from_confusion(confusion) == pytest.approx(SEG.score(PREDICTION, TARGET))
    # a class predicted but absent from the target has IoU 0 and does count
    prediction = PREDICTION.clone()
    prediction[0, 0, 0] = 4
    assert SEG.score(prediction, TARGET)["miou"] == pytest.approx((1 / 4 + 2 / 3 + 2 / 3 + 0) / 4)


def test_the_all_background_floor_scores_background_only():
    scores = floor_scores(TARGET)
    # class 0: TP 3 of 8 predicted 0 -> IoU 3/8; classes 1, 2: IoU 0
    assert scores["miou"] == pytest.approx((3 / 8) / 3)
    assert scores["pixel_acc"] == pytest.approx(3 / 8)


def test_outputs_as_the_model_or_the_distributed_run_give_them_become_class_ids():
    logits = torch.zeros(1, 3, 2, 4).scatter_(1, PREDICTION.unsqueeze(1), 1.0)
    assert torch.equal(SEG.predictions({"out": logits}), PREDICTION)
    assert torch.equal(SEG.predictions(logits), PREDICTION)
    assert torch.equal(SEG.predictions({"out": logits.tolist()}), PREDICTION)


def test_evaluate_streams_one_confusion_matrix_over_batches():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return {"out": x}

    logits = torch.zeros(2, 3, 2, 4).scatter_(1, torch.cat([PREDICTION, PREDICTION]).unsqueeze(1), 1.0)
    targets = torch.cat([TARGET, TARGET])
    loader = [(logits[:1], targets[:1]), (logits[1:], targets[1:])]
    assert SEG.evaluate(Fixed(), loader) == pytest.approx(SEG.score(PREDICTION, TARGET))


def test_metrics_are_named_for_result_keys_and_shown_as_percent():
    assert [m.name for m in SEG.metrics] == ["miou", "pixel_acc"]
    assert SEG.primary_metric is find_metric("miou")
    assert find_metric("miou").format(0.5) == "50.00%"
