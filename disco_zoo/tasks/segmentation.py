"""Semantic segmentation: per-pixel logits out, mIoU and pixel accuracy, cross-entropy.

Data: the embedded digit canvases (:mod:`disco_zoo.data.digit_canvas`, written to the
cache as a mask folder) or a user's mask folder (:mod:`disco_zoo.data.mask_folder`):
``PATH/train`` and ``PATH/val`` to train on (``PATH/test`` too when present), and
``PATH/test``, ``PATH/val`` or ``PATH`` itself to evaluate a pretrained model. Both go
through the same loader. Class names come from ``classes.txt``; mask id 255 is ignored.

Metric convention (torchmetrics' / mmseg's): one confusion matrix over every pixel whose
target is not ``ignore_index``; IoU_c = TP / (TP + FP + FN) for each class c whose union
(TP + FP + FN) is non-zero, i.e. present in the target or the prediction; mIoU is their
mean; a class absent from both is skipped, not scored 0 or 1. Pixel accuracy is the
fraction of those pixels predicted right. :func:`floor_scores` scores the trivial
all-background prediction, the floor a trained model must clearly beat.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks.base import DatasetInfo, EmbeddedDataFacts, EvalSplit, Metric, Task, TrainData

if TYPE_CHECKING:  # torch is imported where the task computes (see tasks.base)
    import torch
    from torch import nn

    from disco_zoo.store import FolderConfig

__all__ = ["SegmentationTask", "MIOU", "PIXEL_ACCURACY", "IGNORE_INDEX", "SIZE_DIVISOR", "BACKGROUND",
           "confusion_matrix", "scores_from_confusion", "floor_scores"]

MIOU = Metric("miou", "mIoU", percent=True)
PIXEL_ACCURACY = Metric("pixel_acc", "pixel acc.", percent=True)
IGNORE_INDEX = 255  # mask id of pixels that count for nothing (ADE20K/Cityscapes convention)
SIZE_DIVISOR = 32  # image sides must be multiples of the deepest stride of the zoo's segmenters
BACKGROUND = 0  # the class id the trivial floor predicts everywhere


def _logits(outputs: Any) -> Any:
    """torchvision segmenters return ``{"out": logits}`` (the distributed run too); plain tensors pass."""
    return outputs["out"] if isinstance(outputs, Mapping) else outputs


def confusion_matrix(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts, row = target class, column = predicted,
    over the pixels whose target is not ``ignore_index`` (one torch.bincount)."""
    import torch

    targets, predictions = torch.as_tensor(targets).reshape(-1), torch.as_tensor(predictions).reshape(-1)
    if targets.shape != predictions.shape:
        raise DiscoZooError(f"predictions have {predictions.numel()} pixels but targets {targets.numel()}; "
                            "score masks of the predictions' size.")
    keep = targets != ignore_index
    targets, predictions = targets[keep].long(), predictions[keep].long()
    return torch.bincount(targets * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """mIoU (classes with a non-zero union only) and pixel accuracy of a confusion matrix."""
    confusion = confusion.double()
    hits = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = union > 0
    total = confusion.sum()
    miou = float((hits[present] / union[present]).mean()) if bool(present.any()) else 0.0
    return {MIOU.name: miou, PIXEL_ACCURACY.name: float(hits.sum() / total) if total > 0 else 0.0}


def _class_count(*tensors: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Enough classes for the ids seen (classes above them have union 0 and are skipped anyway)."""
    highest = 0
    for tensor in tensors:
        valid = tensor[tensor != ignore_index]
        if valid.numel():
            highest = max(highest, int(valid.max()))
    return highest + 1


def floor_scores(targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """The metrics of predicting background (class 0) at every pixel: the trivial floor."""
    import torch

    targets = torch.as_tensor(targets)
    return SegmentationTask().score(torch.full_like(targets, BACKGROUND), targets, ignore_index)


def _canvas_info(folder: Path) -> DatasetInfo:
    from disco_zoo.data.digit_canvas import CANVAS_CLASSES, CANVAS_NAME
    from disco_zoo.data.mask_folder import channel_stats

    mean, std = channel_stats(folder / "train")
    return DatasetInfo(CANVAS_NAME, mean, std, "bilinear", 1.0, CANVAS_CLASSES)


def _check_classes(found: Sequence[str] | None, config: FolderConfig, where: str) -> None:
    """A folder's classes.txt must name the model's classes (mask id i means output i)."""
    expected = config.class_names
    if found is not None and expected is not None and tuple(found) != tuple(expected):
        raise DiscoZooError(f"{where}'s classes.txt names {len(found)} classes ({', '.join(found[:5])}, ...) but "
                            f"{config.name} was trained on {len(expected)} ({', '.join(expected[:5])}, ...); give "
                            "masks with the model's class ids and its classes.txt.")
    if found is not None and config.num_classes is not None and len(found) != config.num_classes:
        raise DiscoZooError(f"{where}'s classes.txt names {len(found)} classes but {config.name} has "
                            f"{config.num_classes} outputs.")


class SegmentationTask(Task):
    name = "segmentation"
    metrics = (MIOU, PIXEL_ACCURACY)
    embedded_dataset = "digit_canvas"
    hub_tag = "image-segmentation"
    deployment_size = 512

    def floor_scores(self, split: EvalSplit) -> dict[str, float]:
        import torch

        return floor_scores(torch.cat([torch.as_tensor(t) for _, t in split.batches()]))

    def embedded_facts(self, side: int, test_images: int | None = None) -> EmbeddedDataFacts:
        from disco_zoo.data.digit_canvas import CANVAS_COUNTS, DIGITS_PER_CANVAS

        test = test_images if test_images is not None else CANVAS_COUNTS["test"]
        return EmbeddedDataFacts(
            title=f"canvases of scikit-learn digits ({CANVAS_COUNTS['train']} train, {CANVAS_COUNTS['val']} val, "
                  f"{test} test, {side}x{side})",
            description=(f"{side}x{side} RGB canvases, each with {DIGITS_PER_CANVAS[0]}-{DIGITS_PER_CANVAS[1]} real "
                         "scikit-learn handwritten digits pasted at random positions and scales (some overlapping) on "
                         "a noisy gradient, with exact per-pixel masks (background plus the ten digits); train, val "
                         f"and test canvases draw on disjoint digit scans; {CANVAS_COUNTS['train']} train, "
                         f"{CANVAS_COUNTS['val']} val and {test} test canvases, seeded. mIoU averages the classes "
                         "present in a split (target or prediction)"),
            test_images=test,
            limits=("real scenes or photographs: it has only seen upscaled 8x8 grey digits pasted on synthetic "
                    "backgrounds. Fine-tune it on your own mask folder first (`disco-zoo train --data PATH`)."))

    # -- data -------------------------------------------------------------------------------

    def load_train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None,
                        augment: bool) -> TrainData:
        from disco_zoo.data.image_folder import IMAGENET_MEAN, IMAGENET_STD
        from disco_zoo.data.mask_folder import mask_folder_loader, read_class_names

        if data == self.embedded_dataset:
            from disco_zoo.data.digit_canvas import embedded_canvas_folder

            root = embedded_canvas_folder(input_size)
            info, flip = _canvas_info(root), False  # a mirrored digit is no digit: no flips
        else:
            root = Path(data)
            for split in ("train", "val"):
                if not (root / split).is_dir():
                    raise DiscoZooError(f"--data {root}: segmentation trains on a mask folder with train/ and val/ "
                                        f"(each images/ + masks/); {root / split} is missing (or pass --data "
                                        f"{self.embedded_dataset}).")
            names = read_class_names(root)
            if names is None:
                raise DiscoZooError(f"{root / 'classes.txt'} is missing; write one class name per line (line i "
                                    "names mask id i) so the model's outputs get names.")
            info, flip = DatasetInfo(root.name, IMAGENET_MEAN, IMAGENET_STD, "bilinear", 1.0, names), True
        classes = len(info.class_names or ())
        loaders = {}
        for split in ("train", "val", "test"):
            folder = root / split if (root / split).is_dir() else root / "val"
            loaders[split] = mask_folder_loader(folder, classes, info.mean, info.std, batch_size, train=split == "train",
                                                seed=seed, limit=limit, size_divisor=SIZE_DIVISOR, flip=flip)
        for split, loader in loaders.items():
            found = getattr(loader.dataset, "dataset", loader.dataset).size  # under a --limit Subset
            if found != (input_size, input_size):
                raise DiscoZooError(f"--input-size {input_size}, but {root / split} holds {found[1]}x{found[0]} images; "
                                    "the config records the size the model was trained at, so pass --input-size "
                                    "with the images' side (square images; crop them otherwise).")
        return TrainData(loaders, info, {"num_classes": classes})

    def eval_split(self, data: str, config: FolderConfig) -> EvalSplit:
        import torch

        from disco_zoo.data.mask_folder import mask_folder_loader, read_class_names

        _, height, width = config.input_size
        num_classes = config.num_classes
        if num_classes is None:
            raise DiscoZooError(f"{config.name}'s config gives neither num_classes nor class_names; a segmentation "
                                "config must say how many classes its masks hold.")
        if data == self.embedded_dataset:
            from disco_zoo.data.digit_canvas import embedded_canvas_folder

            if height != width:
                raise DiscoZooError(f"{config.name}: input_size {list(config.input_size)} is not square; the "
                                    f"embedded {self.embedded_dataset} canvases are square.")
            root = embedded_canvas_folder(height)
            folder = root / "test"
        else:
            root = Path(data)
            folder = next((root / s for s in ("test", "val") if (root / s / "images").is_dir()), root)
        names = read_class_names(folder.parent) if folder != root else read_class_names(root) or read_class_names(root.parent)
        _check_classes(names, config, str(root))
        loader = mask_folder_loader(folder, num_classes, config.mean, config.std, batch_size=64,
                                    size_divisor=SIZE_DIVISOR)
        found = loader.dataset.size
        if config.fixed_input_size and found != (height, width):
            raise DiscoZooError(f"{folder} holds {found[1]}x{found[0]} images but {config.name} takes only "
                                f"{width}x{height}; crop the images and masks to that size.")
        batches = list(loader)
        return EvalSplit(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), data)

    # -- training, outputs, metrics ---------------------------------------------------------

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(_logits(model(inputs)), targets, ignore_index=IGNORE_INDEX)

    def distillation_loss(self, student: Any, teacher: Any) -> torch.Tensor:
        """Per-pixel KL of the softened class distributions, every pixel (ignored ones too:
        the teacher has an answer there)."""
        from disco_zoo.tasks.distillation import logit_distillation

        return logit_distillation(_logits(student), _logits(teacher))

    def predictions(self, outputs: Any) -> torch.Tensor:
        """Per-pixel logits ``[B, C, H, W]`` (or ``{"out": logits}``) -> class ids ``[B, H, W]``."""
        import torch

        return torch.as_tensor(_logits(outputs)).argmax(1)

    def summary(self, outputs: Any) -> dict[str, Any]:
        import torch

        mask = self.predictions(outputs)[0]
        counts = torch.bincount(mask.flatten())
        top = sorted(((int(c), i) for i, c in enumerate(counts.tolist()) if c), reverse=True)[:5]
        return {"mask_shape": list(mask.shape), "classes": [{"class": i, "pixels": c} for c, i in top]}

    def summary_line(self, summary: dict[str, Any]) -> str:
        height, width = summary["mask_shape"]
        total = height * width
        return f"predicted mask {height}x{width}, largest classes: " + ", ".join(
            f"{c['class']} ({c['pixels'] / total:.0%})" for c in summary["classes"])

    def score(self, predictions: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
        import torch

        predictions, targets = torch.as_tensor(predictions), torch.as_tensor(targets)
        classes = _class_count(predictions, targets, ignore_index=ignore_index)
        return scores_from_confusion(confusion_matrix(predictions, targets, classes, ignore_index))

    def concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.cat([torch.as_tensor(p) for p in parts])

    def evaluate(self, model: nn.Module, loader: Iterable[tuple[Any, Any]]) -> dict[str, float]:
        """As :meth:`Task.evaluate`, summing one confusion matrix per batch instead of keeping every mask."""
        import torch.nn.functional as F

        confusions = []
        for inputs, targets in loader:
            predictions = self.predict(model, inputs)
            confusions.append(confusion_matrix(predictions, targets, _class_count(predictions, targets)))
        if not confusions:
            raise DiscoZooError("the evaluation loader holds no images")
        size = max(len(c) for c in confusions)
        return scores_from_confusion(sum(F.pad(c, (0, size - len(c), 0, size - len(c))) for c in confusions))
