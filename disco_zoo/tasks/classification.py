"""Image classification: logits out, top-1 accuracy, cross-entropy.

Data: the embedded digits (:mod:`disco_zoo.data.digits`) or an ImageFolder
(:mod:`disco_zoo.data.image_folder`): ``PATH/train`` and ``PATH/val`` to train on, and
``PATH/val`` (or ``PATH`` itself) to evaluate a pretrained model, preprocessed with the
model's own config and refused unless its classes are the model's ``class_names``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks.base import DatasetInfo, EmbeddedDataFacts, EvalSplit, Metric, Task, TrainData

if TYPE_CHECKING:  # torch is imported where the task computes (see tasks.base)
    import torch
    from torch import nn

    from disco_zoo.store import FolderConfig

__all__ = ["ClassificationTask", "TOP1"]

TOP1 = Metric("top1", "top-1", percent=True, per_image=True)
EVAL_BATCH = 64  # images per batch while reading a folder into the eval split


def _digits_info() -> DatasetInfo:
    from disco_zoo.data.digits import DIGITS_CLASSES, DIGITS_INTERPOLATION, DIGITS_MEAN, DIGITS_NAME, DIGITS_STD

    return DatasetInfo(DIGITS_NAME, (DIGITS_MEAN,) * 3, (DIGITS_STD,) * 3, DIGITS_INTERPOLATION, 1.0, DIGITS_CLASSES)


class ClassificationTask(Task):
    name = "classification"
    metrics = (TOP1,)
    embedded_dataset = "digits"
    hub_tag = "image-classification"
    deployment_size = 224  # the DISCO paper's ImageNet size

    # -- data -------------------------------------------------------------------------------

    def load_train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None,
                        augment: bool) -> TrainData:
        if data == self.embedded_dataset:
            from disco_zoo.data.digits import digits_loaders

            info = _digits_info()
            loaders = digits_loaders(input_size, batch_size, seed, limit)
        else:
            loaders, info = self._folder_loaders(Path(data), input_size, batch_size, seed, limit)
        return TrainData(loaders, info, {"num_classes": len(info.class_names or ())})

    def _folder_loaders(self, root: Path, size: int, batch_size: int, seed: int,
                        limit: int | None) -> tuple[dict[str, Any], DatasetInfo]:
        from disco_zoo.data.image_folder import (DEFAULT_INTERPOLATION, EVAL_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD,
                                                 check_classes, image_folder_loader)

        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DiscoZooError(f"--data {root}: training reads an ImageFolder root with train/ and val/ inside; "
                                    f"{root / split} is missing (or pass --data {self.embedded_dataset}).")
        info = DatasetInfo(root.name, IMAGENET_MEAN, IMAGENET_STD, DEFAULT_INTERPOLATION, EVAL_CROP_PCT)
        preprocessing = {"mean": info.mean, "std": info.std, "interpolation": info.interpolation}
        train = image_folder_loader(root / "train", size, batch_size, train=True, seed=seed, limit=limit, **preprocessing)
        val = image_folder_loader(root / "val", size, batch_size, limit=limit, crop_pct=info.crop_pct, **preprocessing)
        check_classes(val.dataset.classes, train.dataset.classes, str(root / "val"), str(root / "train"))
        info = DatasetInfo(info.name, info.mean, info.std, info.interpolation, info.crop_pct,
                           tuple(train.dataset.classes))
        return {"train": train, "val": val, "test": val}, info

    def eval_split(self, data: str, config: FolderConfig) -> EvalSplit:
        from disco_zoo.data.image_folder import check_classes

        _, height, width = config.input_size
        if height != width:
            raise DiscoZooError(f"{config.name}: input_size {list(config.input_size)} is not square; "
                                "the classification loaders make square images.")
        if data == self.embedded_dataset:
            from disco_zoo.data.digits import digits_dataset

            info = _digits_info()
            images, labels = digits_dataset("test", size=height).tensors
            check_classes(info.class_names or (), config.class_names, f"--data {data}", config.name,
                          config.num_classes)
            return EvalSplit(images, labels, data)
        return self._folder_split(Path(data), config)

    def _folder_split(self, root: Path, config: FolderConfig) -> EvalSplit:
        import torch

        from disco_zoo.data.image_folder import check_classes, image_folder_loader

        folder = root / "val" if (root / "val").is_dir() else root
        loader = image_folder_loader(folder, config.input_size[-1], EVAL_BATCH, mean=config.mean, std=config.std,
                                     crop_pct=config.crop_pct, interpolation=config.interpolation)
        check_classes(loader.dataset.classes, config.class_names, str(folder), config.name, config.num_classes)
        batches = list(loader)
        if not batches:
            raise DiscoZooError(f"{folder} holds no images to evaluate on.")
        return EvalSplit(torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), str(root))

    def embedded_facts(self, side: int, test_images: int | None = None) -> EmbeddedDataFacts:
        from disco_zoo.data.digits import digits_split_sizes

        sizes = digits_split_sizes()
        total = sum(sizes.values())
        test = test_images if test_images is not None else sizes["test"]
        return EmbeddedDataFacts(
            title=f"scikit-learn handwritten digits ({total:,} images, test split {test})",
            description=(f"scikit-learn's handwritten digits: {total:,} real 8x8 grey images of the digits 0-9, "
                         f"split 70/15/15 (stratified, seed 0) into {sizes['train']:,} train, {sizes['val']} "
                         f"validation and {test} test images, upscaled to {side}x{side} and repeated to 3 channels"),
            test_images=test,
            limits=("real photographs, or any images but handwritten digits: it has seen only 8x8 grey "
                    "digits, upscaled. Fine-tune it on your own data first (`disco-zoo train` / `disco-zoo sparsify "
                    "--data PATH`)."))

    # -- training, outputs, metrics ---------------------------------------------------------

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(model(inputs), targets)

    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        from disco_zoo.tasks.distillation import logit_distillation

        return logit_distillation(student, teacher)

    def predictions(self, outputs: Any) -> torch.Tensor:
        """Logits (or nested lists of them, as the root rank reports them) -> class ids."""
        import torch

        return torch.as_tensor(outputs).argmax(1)

    def summary(self, outputs: Any) -> dict[str, Any]:
        import torch

        logits = torch.as_tensor(outputs)[0].tolist()
        top = sorted(range(len(logits)), key=lambda i: -logits[i])[:5]
        return {"top5": [{"class": i, "logit": logits[i]} for i in top]}

    def summary_line(self, summary: dict[str, Any]) -> str:
        return "top-5: " + ", ".join(f"{t['class']} ({t['logit']:.3f})" for t in summary["top5"])

    def score(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return {TOP1.name: float((predictions == targets).float().mean())}

    def concat(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.cat(list(parts))
