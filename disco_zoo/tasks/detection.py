"""Object detection: images in, per-image boxes, labels and scores out; COCO box AP.

Data: the embedded digit boxes (:mod:`disco_zoo.data.digit_boxes`, written to the cache
as a COCO folder) or a user's COCO folder (:mod:`disco_zoo.data.coco_folder`):
``annotations/instances_train.json`` and ``instances_val.json`` to train on
(``instances_test.json`` too when present), and test, else val, to evaluate a
pretrained model. Both go through the same loader. Labels are category ids (0 is
background), so ``num_classes`` is the highest id + 1.

A batch is a list of images and a list of target dicts (torchvision's detection
convention): a model in train mode given targets returns a dict of losses, whose sum
is the training loss; in eval mode it returns ``[{boxes, labels, scores}]``, which are
the predictions. Metrics are pycocotools' box AP@[.5:.95], AP50 and AP75
(:mod:`disco_zoo.tasks.detection_metric`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks.base import DatasetInfo, EmbeddedDataFacts, EvalSplit, Metric, Task, TrainData

if TYPE_CHECKING:  # torch is imported where the task computes (see tasks.base)
    import torch
    from torch import nn

    from disco_zoo.data.coco_folder import CocoAnnotations
    from disco_zoo.store import FolderConfig

__all__ = ["DetectionTask", "BOX_AP", "AP50", "AP75", "MIN_INPUT_SIDE", "EVAL_BATCH", "CLASS_SCORES"]

BOX_AP = Metric("box_ap", "box AP", percent=True)
AP50 = Metric("ap50", "AP50", percent=True)
AP75 = Metric("ap75", "AP75", percent=True)
# Below 64 pixels the embedded canvases' digits are under 13 pixels a side: less than two
# cells of the finest FPN level (stride 8), too few for a dense head to place a box.
MIN_INPUT_SIDE = 64
EVAL_BATCH = 64  # images per batch of the eval split
CLASS_SCORES = ("sigmoid", "softmax")  # how a detector scores classes (pretrained_cfg["class_scores"])
_UNIT_STATS = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # the models take [0, 1] images and normalise them themselves


def _info(name: str, class_names: tuple[str, ...]) -> DatasetInfo:
    return DatasetInfo(name, *_UNIT_STATS, "bilinear", 1.0, class_names)


def _check_classes(found: tuple[str, ...], config: FolderConfig, where: str) -> None:
    """A folder's categories must be the model's (category id i means output i)."""
    expected = config.class_names
    if expected is not None and tuple(found) != tuple(expected):
        raise DiscoZooError(f"{where}'s categories name {len(found) - 1} ids ({', '.join(found[1:6])}, ...) but "
                            f"{config.name} was trained on {len(expected) - 1} ({', '.join(expected[1:6])}, ...); give "
                            "annotations with the model's category ids and names.")
    if config.num_classes is not None and len(found) > config.num_classes:
        raise DiscoZooError(f"{where}'s category ids reach {len(found) - 1} but {config.name} has "
                            f"{config.num_classes} outputs.")


def _grouped(images: list[torch.Tensor], targets: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Equal-sized images stacked in batches of :data:`EVAL_BATCH` (in order, a new batch
    where the size changes); one batch is a tensor, several a list (as EvalSplit takes)."""
    import torch

    inputs, grouped, start = [], [], 0
    for end in range(1, len(images) + 1):
        if end == len(images) or images[end].shape != images[start].shape or end - start == EVAL_BATCH:
            inputs.append(torch.stack(images[start:end]))
            grouped.append(targets[start:end])
            start = end
    return (inputs[0], grouped[0]) if len(inputs) == 1 else (inputs, grouped)


class DetectionTask(Task):
    name = "detection"
    metrics = (BOX_AP, AP50, AP75)
    embedded_dataset = "digit_boxes"
    hub_tag = "object-detection"
    deployment_size = 640  # the usual COCO detector input side
    train_augmentation = ("photometric distortion, zoom-out and SSD's min-IoU random crop, no flip "
                          "(disco_zoo.data.box_augment)")

    def embedded_facts(self, side: int, test_images: int | None = None) -> EmbeddedDataFacts:
        from disco_zoo.data.digit_boxes import BOXES_COUNTS, DIGITS_PER_BOX_CANVAS

        test = test_images if test_images is not None else BOXES_COUNTS["test"]
        return EmbeddedDataFacts(
            title=f"canvases of scikit-learn digits with boxes ({BOXES_COUNTS['train']} train, {BOXES_COUNTS['val']} "
                  f"val, {test} test, {side}x{side})",
            description=(f"{side}x{side} RGB canvases, each with {DIGITS_PER_BOX_CANVAS[0]}-{DIGITS_PER_BOX_CANVAS[1]} "
                         "real scikit-learn handwritten digits pasted at random positions and scales (some overlapping) "
                         "on a noisy gradient, with exact boxes (the tight box of each digit's visible ink; fully "
                         "hidden digits dropped) in COCO format, ten categories; train, val and test canvases draw on "
                         f"disjoint digit scans; {BOXES_COUNTS['train']} train, {BOXES_COUNTS['val']} val and {test} "
                         "test canvases, seeded. Box AP is pycocotools' AP@[.5:.95]"),
            test_images=test,
            limits=("real scenes or photographs: it has only seen upscaled 8x8 grey digits pasted on synthetic "
                    "backgrounds. Fine-tune it on your own COCO folder first (`disco-zoo train --data PATH`)."))

    # -- data -------------------------------------------------------------------------------

    def _root(self, data: str, side: int) -> Path:
        if data == self.embedded_dataset:
            from disco_zoo.data.digit_boxes import embedded_boxes_folder

            return embedded_boxes_folder(side)
        return Path(data)

    def load_train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None,
                        augment: bool) -> TrainData:
        from disco_zoo.data.coco_folder import annotation_path, check_min_size, coco_folder_loader

        check_min_size(input_size, MIN_INPUT_SIDE, f"--input-size {input_size}")
        root = self._root(data, input_size)
        if data != self.embedded_dataset:
            for split in ("train", "val"):
                if not annotation_path(root, split).is_file():
                    raise DiscoZooError(f"--data {root}: detection trains on a COCO folder with "
                                        f"annotations/instances_train.json and instances_val.json; "
                                        f"{annotation_path(root, split)} is missing (or pass --data "
                                        f"{self.embedded_dataset}).")
        loaders = {}
        for split in ("train", "val", "test"):
            read = split if annotation_path(root, split).is_file() else "val"
            loaders[split] = coco_folder_loader(root, read, batch_size, train=split == "train", seed=seed, limit=limit,
                                                augment=augment and split == "train")
        names = self._folder(loaders["train"]).class_names
        for split in ("val", "test"):
            if self._folder(loaders[split]).class_names != names:
                raise DiscoZooError(f"{annotation_path(root, split)} names other categories than "
                                    f"{annotation_path(root, 'train')}; every split must share one category list.")
        info = _info(root.name if data != self.embedded_dataset else data, names)
        return TrainData(loaders, info, {"num_classes": len(names), "min_size": input_size, "max_size": input_size})

    @staticmethod
    def _folder(loader: Any) -> CocoAnnotations:
        return getattr(loader.dataset, "dataset", loader.dataset).annotations  # under a --limit Subset

    def eval_split(self, data: str, config: FolderConfig) -> EvalSplit:
        from disco_zoo.data.coco_folder import CocoFolder, annotation_path, check_min_size

        _, height, width = config.input_size
        check_min_size(min(height, width), MIN_INPUT_SIDE, config.name)
        if (tuple(config.mean), tuple(config.std)) != (_UNIT_STATS[0][:len(config.mean)], _UNIT_STATS[1][:len(config.std)]):
            raise DiscoZooError(f"{config.name}: a detector takes [0, 1] images and normalises them itself, so its "
                                f"config's mean/std must be 0/1, not {list(config.mean)}/{list(config.std)}.")
        if data == self.embedded_dataset and height != width:
            raise DiscoZooError(f"{config.name}: input_size {list(config.input_size)} is not square; the embedded "
                                f"{self.embedded_dataset} canvases are square.")
        root = self._root(data, height)
        split = next((s for s in ("test", "val") if annotation_path(root, s).is_file()), "test")
        folder = CocoFolder(root, split)
        _check_classes(folder.annotations.class_names, config, str(root))
        samples = [folder[i] for i in range(len(folder))]
        inputs, targets = _grouped([s[0] for s in samples], [s[1] for s in samples])
        return EvalSplit(inputs, targets, data)

    # -- training, outputs, metrics ---------------------------------------------------------

    def training_loss(self, model: nn.Module, inputs: Sequence[torch.Tensor],
                      targets: Sequence[dict[str, Any]]) -> torch.Tensor:
        """The sum of the losses a torchvision detector returns in train mode given targets."""
        losses = model(list(inputs), list(targets))
        return sum(losses.values())

    def distillation_outputs(self, model: nn.Module) -> nn.Module:
        """A torchvision detector's ``head``: in training its forward returns losses, and its
        head's per-location outputs (class logits, box regression, ...) are what it learns."""
        return model.head

    def distillation_divergence(self, model: nn.Module) -> Any:
        """:meth:`distillation_loss` with the class scoring the model declares in
        ``pretrained_cfg["class_scores"]``: ``sigmoid`` (FCOS, RetinaNet: one score per
        class) unless it says ``softmax`` (SSD: one distribution per box, class 0 the
        background), as its own post-processing scores them."""
        from functools import partial

        cfg = getattr(model, "pretrained_cfg", None)  # the built model's (distillation builds it)
        scores = cfg.get("class_scores", "sigmoid") if isinstance(cfg, dict) else "sigmoid"
        if scores not in CLASS_SCORES:
            raise DiscoZooError(f"pretrained_cfg['class_scores'] is {scores!r}; a detector scores classes by one of "
                                f"{', '.join(CLASS_SCORES)}")
        return partial(self.distillation_loss, class_scores=scores)

    def distillation_loss(self, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor],
                          class_scores: str = "sigmoid") -> torch.Tensor:
        """The heads' outputs against the dense teacher's, per location: the class scores
        as soft targets (per-class sigmoids, or one softmax over the classes with the
        background first, as ``class_scores`` says), and every other output (box
        regression, centerness) by smooth L1, weighed by how surely the teacher sees an
        object there (its top class score; one minus the background's under softmax), so
        locations on background do not drown the objects'. Normalised by that weight's
        sum, as the detection losses are by the positives."""
        import torch
        import torch.nn.functional as F

        logits = teacher["cls_logits"]
        if class_scores == "softmax":
            probs = torch.softmax(logits, dim=-1)
            weight = 1.0 - probs[..., 0]  # [N, locations]
            norm = weight.sum().clamp(min=1.0)
            loss = -(probs * F.log_softmax(student["cls_logits"], dim=-1)).sum() / norm  # cross-entropy to soft targets
        else:
            scores = torch.sigmoid(logits)
            weight = scores.max(dim=-1).values  # [N, locations]
            norm = weight.sum().clamp(min=1.0)
            loss = F.binary_cross_entropy_with_logits(student["cls_logits"], scores, reduction="sum") / norm
        for key in teacher:
            if key != "cls_logits":
                gap = F.smooth_l1_loss(student[key], teacher[key], reduction="none").flatten(2).sum(dim=-1)
                loss = loss + (weight * gap).sum() / norm
        return loss

    def predictions(self, outputs: Any) -> list[dict[str, torch.Tensor]]:
        """A detector's per-image ``{boxes, labels, scores}`` (tensors, or lists as the root rank reports them)."""
        import torch

        return [{key: torch.as_tensor(out[key]).detach().cpu() for key in ("boxes", "labels", "scores")}
                for out in outputs]

    def summary(self, outputs: Any) -> dict[str, Any]:
        first = self.predictions(outputs)[0]
        order = first["scores"].argsort(descending=True)[:5].tolist()
        return {"boxes": len(first["scores"]),
                "top": [{"class": int(first["labels"][i]), "score": float(first["scores"][i]),
                         "box": [round(float(v), 1) for v in first["boxes"][i]]} for i in order]}

    def summary_line(self, summary: dict[str, Any]) -> str:
        shown = ", ".join(f"{t['class']} ({t['score']:.2f}) at {t['box']}" for t in summary["top"])
        return f"{summary['boxes']} boxes" + (f", highest scores: {shown}" if shown else "")

    def score(self, predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> dict[str, float]:
        from disco_zoo.tasks.detection_metric import coco_box_ap

        return coco_box_ap(predictions, targets)

    def concat(self, parts: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [item for part in parts for item in part]
