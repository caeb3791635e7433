"""COCO box AP of detections against targets, through pycocotools (the reference code).

Why pycocotools and not a re-implementation: AP@[.5:.95] has many conventions (101-point
interpolation, greedy matching by score, per-category averaging, max 100 detections per
image) and published figures are pycocotools'. The ground truth is built in memory from
the targets (boxes xyxy, labels = category ids), one COCO image per target in order, so
no file is written; pycocotools' prints are silenced.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np

from disco_zoo.errors import DiscoZooError

__all__ = ["coco_box_ap", "AP_KEYS"]

AP_KEYS = ("box_ap", "ap50", "ap75")  # COCOeval.stats[0], [1], [2]


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _xywh(boxes: Any) -> np.ndarray:
    boxes = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def coco_box_ap(predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> dict[str, float]:
    """``{"box_ap", "ap50", "ap75"}`` of per-image predictions (``boxes`` xyxy, ``labels``,
    ``scores``) against per-image targets (``boxes`` xyxy, ``labels``), paired in order."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(predictions) != len(targets):
        raise DiscoZooError(f"{len(predictions)} predictions for {len(targets)} targets; score one prediction per image.")
    images, annotations, detections, category_ids = [], [], [], set()
    for image_id, (prediction, target) in enumerate(zip(predictions, targets), start=1):
        images.append({"id": image_id})
        for box, label in zip(_xywh(target["boxes"]), _numpy(target["labels"]).reshape(-1)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
            category_ids.add(int(label))
        for box, label, score in zip(_xywh(prediction["boxes"]), _numpy(prediction["labels"]).reshape(-1),
                                     _numpy(prediction["scores"]).reshape(-1)):
            detections.append({"image_id": image_id, "category_id": int(label), "bbox": box.tolist(),
                               "score": float(score)})
            category_ids.add(int(label))
    if not annotations:
        raise DiscoZooError("the targets hold no boxes; box AP needs ground-truth objects to score against.")
    if not detections:
        return {key: 0.0 for key in AP_KEYS}
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c} for c in sorted(category_ids)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    # -1 marks "no ground truth of this kind"; with annotations present the three below are defined
    return {key: max(float(evaluation.stats[i]), 0.0) for i, key in enumerate(AP_KEYS)}
