"""What a task kind is: the one object that knows a task's data, metric, loss and outputs.

Why: training, sparsifying and evaluating are written once for every task kind
(classification now; segmentation, super-resolution and detection next). What differs
between kinds lives behind this interface, so none of those loops asks which task it
runs:

* data: the embedded default set of the kind and the real on-disk format (``--data
  PATH``), for training (:meth:`Task.train_data`, with the augmentation the kind
  offers, :attr:`Task.train_augmentation`, under ``--augment``) and for evaluating a
  pretrained model (:meth:`Task.eval_split`, checked against the model's config);
* the training loss, from a batch and the model (:meth:`Task.training_loss`: a loss of
  (output, target), or one the model itself returns);
* post-processing: the model's raw outputs (on the root node, after the heads are
  gathered) to predictions (:meth:`Task.predictions`);
* metrics: named figures of predictions against targets (:meth:`Task.score`), whose
  names make the result keys (``disco_top1``, ``test_top1``, ...).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Sequence

if TYPE_CHECKING:  # torch is imported where a task computes, so looking a task up stays cheap
    import torch
    from torch import nn

    from disco_zoo.store import FolderConfig

__all__ = ["Metric", "DatasetInfo", "TrainData", "EvalSplit", "Task", "TrainingLoss", "EmbeddedDataFacts"]

TrainingLoss = Callable[["nn.Module", Any, Any], "torch.Tensor"]  # (model, inputs, targets) -> scalar loss


@dataclass(frozen=True)
class Metric:
    """One figure a task reports: ``name`` is the suffix of its result keys."""

    name: str  # "top1" -> disco_top1, dense_top1, val_top1, test_top1
    label: str  # how a table shows it: "top-1"
    percent: bool = False  # a fraction in [0, 1], shown as a percentage
    unit: str = ""
    tolerance: float = 0.0  # a change this small is no change (the fp16 storage decision); 0 for exact metrics
    per_image: bool = False  # the fraction of test images answered right: a binomial (Wilson) interval applies

    def format(self, value: float) -> str:
        return f"{value:.2%}" if self.percent else f"{value:.4g}{(' ' + self.unit) if self.unit else ''}"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model's config records about the data it was trained on (and so expects)."""

    name: str  # "digits", or the data folder's name
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    class_names: tuple[str, ...] | None = None

    def config_fields(self) -> dict[str, Any]:
        """The config.json keys a writer (train, sparsify) puts in a folder."""
        fields: dict[str, Any] = {"dataset": self.name, "mean": list(self.mean), "std": list(self.std),
                                  "interpolation": self.interpolation, "crop_pct": self.crop_pct}
        if self.class_names is not None:
            fields["class_names"] = list(self.class_names)
        return fields


@dataclass(frozen=True)
class EmbeddedDataFacts:
    """What a model card says about a kind's embedded data set: where it comes from, its
    size, and what a model trained only on it must not be used for."""

    title: str
    description: str
    test_images: int
    limits: str


@dataclass
class TrainData:
    """Loaders for ``train``, ``val`` and ``test``, and what a model trained on them expects."""

    loaders: dict[str, Any]
    info: DatasetInfo
    model_args: dict[str, Any] = field(default_factory=dict)  # builder arguments the data fixes (num_classes)


@dataclass(frozen=True)
class EvalSplit:
    """A task's evaluation inputs and targets: one batch (as the distributed run takes
    them), or a list of batches where the images differ in size (whole held-out
    photographs for super-resolution), with ``targets`` the matching list."""

    inputs: torch.Tensor | list[torch.Tensor]
    targets: Any
    source: str  # what ``--data`` named

    def batches(self) -> list[tuple[torch.Tensor, Any]]:
        """(inputs, targets) per batch of equal-sized images, in order."""
        if isinstance(self.inputs, (list, tuple)):
            return list(zip(self.inputs, self.targets))
        return [(self.inputs, self.targets)]

    def __len__(self) -> int:
        return sum(len(inputs) for inputs, _ in self.batches())


class Task(ABC):
    """One task kind. Instances hold no state: one per kind, looked up by name."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[Metric, ...]]  # the first is the headline (storage decisions, tables)
    embedded_dataset: ClassVar[str]  # what ``--data`` calls the kind's embedded default
    hub_tag: ClassVar[str]  # the Hugging Face pipeline tag of a model card ("image-classification")
    deployment_size: ClassVar[int]  # input side also accounted and timed by eval (224; 512 segmentation; 256 LR SR)
    train_augmentation: ClassVar[str | None] = None  # what ``--augment`` does to training samples; None: not offered

    @property
    def primary_metric(self) -> Metric:
        return self.metrics[0]

    # -- data -------------------------------------------------------------------------------

    def train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None = None,
                   augment: bool = False) -> TrainData:
        """Seeded loaders from the embedded set (``data == embedded_dataset``) or a folder;
        ``augment`` transforms the training samples as :attr:`train_augmentation` says."""
        if augment and self.train_augmentation is None:
            from disco_zoo.errors import DiscoZooError

            raise DiscoZooError(f"{self.name} training has no augmentation; leave out --augment")
        return self.load_train_data(data, input_size, batch_size, seed, limit, augment)

    @abstractmethod
    def load_train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None,
                        augment: bool) -> TrainData:
        """:meth:`train_data` once ``augment`` is known to be offered."""

    @abstractmethod
    def eval_split(self, data: str, config: FolderConfig) -> EvalSplit:
        """The evaluation split for a pretrained model, preprocessed as its config says;
        data that does not fit the model (other classes, ...) is a clear error."""

    # -- training ---------------------------------------------------------------------------

    @abstractmethod
    def training_loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """The loss one training step minimises on a batch."""

    def distillation_outputs(self, model: nn.Module) -> nn.Module:
        """The module whose outputs :meth:`distillation_loss` compares: the model itself,
        unless its training forward returns something else (a detector's losses)."""
        return model

    def distillation_divergence(self, model: nn.Module) -> Callable[[Any, Any], torch.Tensor]:
        """The divergence :mod:`disco_zoo.distill` uses for ``model``: :meth:`distillation_loss`,
        unless what the outputs mean depends on the model (how a detector scores classes)."""
        return self.distillation_loss

    def distillation_loss(self, student: Any, teacher: Any) -> torch.Tensor:
        """How far the student's raw outputs are from the teacher's on one batch
        (:mod:`disco_zoo.distill`); a kind without one refuses ``--distill``."""
        from disco_zoo.errors import DiscoZooError

        raise DiscoZooError(f"{self.name} models have no distillation loss; leave out --distill")

    # -- outputs and metrics ----------------------------------------------------------------

    @abstractmethod
    def predictions(self, outputs: Any) -> Any:
        """Raw model outputs (a batch) -> predictions :meth:`score` takes."""

    @abstractmethod
    def score(self, predictions: Any, targets: Any) -> dict[str, float]:
        """Every metric of :attr:`metrics`, by name."""

    @abstractmethod
    def concat(self, parts: Sequence[Any]) -> Any:
        """Join per-batch predictions (or targets) into one."""

    @abstractmethod
    def summary(self, outputs: Any) -> dict[str, Any]:
        """What ``disco-zoo run`` reports of one batch's raw outputs (JSON-able; its first
        image): the top classes, the predicted mask's classes, the upscaled image's size."""

    @abstractmethod
    def summary_line(self, summary: dict[str, Any]) -> str:
        """:meth:`summary` as one line for a terminal."""

    def predict(self, model: nn.Module, inputs: Any) -> Any:
        """Predictions of ``model`` (eval mode, no gradients) on one batch."""
        import torch

        model.eval()
        with torch.inference_mode():
            return self.predictions(model(inputs))

    def score_split(self, model: nn.Module, split: EvalSplit) -> dict[str, float]:
        """Every metric of ``model`` over an eval split, batch by batch."""
        return self.evaluate(model, split.batches())

    @abstractmethod
    def embedded_facts(self, side: int, test_images: int | None = None) -> EmbeddedDataFacts:
        """The card's account of :attr:`embedded_dataset` at ``side`` pixels (the test count
        from a recorded result where there is one, else from the data code)."""

    def floor_scores(self, split: EvalSplit) -> dict[str, float] | None:
        """The metrics of the trivial answer a trained model must clearly beat (bicubic
        upsampling; all background), so tables can show it; None where a kind has none
        worth showing (classification: chance is known)."""
        return None

    def evaluate(self, model: nn.Module, loader: Iterable[tuple[Any, Any]]) -> dict[str, float]:
        """Every metric of ``model`` over a loader, batch by batch, in eval mode."""
        predictions, targets = [], []
        for inputs, batch_targets in loader:
            predictions.append(self.predict(model, inputs))
            targets.append(batch_targets)
        return self.score(self.concat(predictions), self.concat(targets))
