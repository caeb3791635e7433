"""Single-image super-resolution: an LR image in, an HR image out; PSNR and SSIM on Y; L1.

Data: :mod:`disco_zoo.data.sr_images`, the embedded photographs (``--data photos``)
or an HR folder (``PATH/train``, ``PATH/test``, optional ``PATH/val``; LR by bicubic
degradation, or from ``PATH/<split>_LR_x<scale>``). Training draws random LR patches of
``--input-size`` a side; val and test are whole held-out images, one per batch (the
images differ in size), so :meth:`Task.evaluate` over them is the reported figure.

Scoring, as EDSR/RCAN evaluate: predictions are clamped to [0, 1] and rounded to 8-bit
levels (what a saved PNG holds); both images go to the BT.601 luma
Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255 (RGB in [0, 1]); a border of ``scale``
pixels is shaved; PSNR and SSIM come from scikit-image with ``data_range=1`` (SSIM with
the Gaussian 11x11, sigma 1.5 window of Wang et al.); figures are means over images.
The scale of each image is its HR/LR size ratio, carried with its target
(:class:`SRTarget`). PSNR of identical images is infinite; it is capped at
:data:`PSNR_CAP_DB` so means and tables stay finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks.base import DatasetInfo, EmbeddedDataFacts, EvalSplit, Metric, Task, TrainData

if TYPE_CHECKING:  # torch is imported where the task computes (see tasks.base)
    import torch
    from torch import nn

    from disco_zoo.data.sr_images import SRPair
    from disco_zoo.store import FolderConfig

__all__ = ["SuperResolutionTask", "SRTarget", "PSNR", "SSIM", "PSNR_CAP_DB", "DEFAULT_SCALE", "PATCHES_PER_EPOCH",
           "luma", "floor_scores"]

PSNR = Metric("psnr", "PSNR (Y)", unit="dB", tolerance=0.01)
SSIM = Metric("ssim", "SSIM (Y)", tolerance=1e-4)
PSNR_CAP_DB = 100.0  # PSNR of identical images (infinite) is reported as this
DEFAULT_SCALE = 2  # the scale a folder config without ``args.scale`` is read at
PATCHES_PER_EPOCH = 1600  # random training patches per epoch
_SSIM_WINDOW = 11  # the Gaussian window's side (sigma 1.5, truncated at 3.5 sigma)
_BT601 = np.array([65.481, 128.553, 24.966]) / 255.0


class SRTarget(NamedTuple):
    """One evaluation target: the HR image (1, 3, H, W) in [0, 1], and the HR/LR size ratio
    of its pair (the border shave and the floor's upsampling factor)."""

    hr: Any
    scale: int


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 Y in [16/255, 235/255] of a (3, H, W) RGB array in [0, 1]."""
    return 16.0 / 255.0 + np.tensordot(_BT601, rgb.astype(np.float64), axes=1)


def _y_scores(prediction: np.ndarray, target: np.ndarray, shave: int) -> tuple[float, float]:
    """(PSNR, SSIM) on Y of two (3, H, W) arrays in [0, 1], ``shave`` pixels cut from each border."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    if prediction.shape != target.shape:
        raise DiscoZooError(f"a prediction is {prediction.shape[-1]}x{prediction.shape[-2]} but its HR target is "
                            f"{target.shape[-1]}x{target.shape[-2]}: the model's scale is not the data's.")
    cut = (slice(shave, -shave), slice(shave, -shave)) if shave else (slice(None), slice(None))
    y_pred, y_true = luma(prediction)[cut], luma(target)[cut]
    if min(y_true.shape) < _SSIM_WINDOW:
        raise DiscoZooError(f"an HR image of {target.shape[-1]}x{target.shape[-2]} leaves {y_true.shape[1]}x"
                            f"{y_true.shape[0]} after the {shave} px border shave, under SSIM's {_SSIM_WINDOW} px "
                            "window; score larger images.")
    if np.array_equal(y_pred, y_true):
        psnr = PSNR_CAP_DB
    else:
        psnr = min(PSNR_CAP_DB, float(peak_signal_noise_ratio(y_true, y_pred, data_range=1.0)))
    ssim = float(structural_similarity(y_true, y_pred, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))
    return psnr, ssim


def _photos_info(name: str) -> DatasetInfo:
    return DatasetInfo(name, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bicubic", 1.0)


def _numpy(image: Any) -> np.ndarray:
    """A (1, 3, H, W) or (3, H, W) tensor or nested list -> a (3, H, W) float array."""
    import torch

    array = torch.as_tensor(image).detach().float().cpu().numpy()
    return array[0] if array.ndim == 4 else array


def floor_scores(split: EvalSplit) -> dict[str, float]:
    """The floor every SR model is reported against: each LR input upsampled by PIL bicubic
    to its HR size, scored as :meth:`SuperResolutionTask.score` scores a model."""
    from disco_zoo.data.sr_images import bicubic_upsample

    task, upsampled = SuperResolutionTask(), []
    for inputs, target in split.batches():
        lr = np.rint(_numpy(inputs).transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8)
        hr = bicubic_upsample(lr, tuple(_numpy(target.hr).shape[1:]))
        upsampled.append(task.predictions(hr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0))
    return task.score(upsampled, list(split.targets))


class SuperResolutionTask(Task):
    name = "super_resolution"
    metrics = (PSNR, SSIM)
    embedded_dataset = "photos"
    hub_tag = "image-to-image"
    deployment_size = 256  # LR side accounted and timed by eval

    def floor_scores(self, split: EvalSplit) -> dict[str, float]:
        return floor_scores(split)

    def embedded_facts(self, side: int, test_images: int | None = None) -> EmbeddedDataFacts:
        from disco_zoo.data.sr_images import TEST_IMAGES, TRAIN_IMAGES, VAL_IMAGES

        test = test_images if test_images is not None else len(TEST_IMAGES)
        return EmbeddedDataFacts(
            title=f"photographs shipped by scikit-image and scikit-learn ({len(TRAIN_IMAGES)} train, "
                  f"{len(VAL_IMAGES)} val, {test} test)",
            description=(f"real photographs that scikit-image and scikit-learn ship: trained on random {side}x{side} "
                         f"low-resolution patches of {', '.join(TRAIN_IMAGES)}; validated on {', '.join(VAL_IMAGES)}; "
                         f"tested on the whole held-out images {', '.join(TEST_IMAGES)}. Low-resolution inputs are "
                         "PIL bicubic downsamplings of the high-resolution images; PSNR and SSIM on the Y channel "
                         "with a border of `scale` pixels shaved"),
            test_images=test,
            limits=("a benchmark of {} photographs, not DIV2K: its PSNR is not comparable with published x2 "
                    "figures on Set5/Set14/DIV2K. Degradations other than bicubic downsampling (blur, noise, "
                    "JPEG) were never seen. Fine-tune on your own HR folder first (`disco-zoo train --data PATH`)."
                    ).format(len(TRAIN_IMAGES) + len(VAL_IMAGES) + test))

    # -- data -------------------------------------------------------------------------------

    def _root(self, data: str) -> tuple[Path, str]:
        """The folder ``--data`` names (the embedded set written on first use) and its name."""
        from disco_zoo.data.sr_images import ensure_embedded

        if data == self.embedded_dataset:
            return ensure_embedded(), data
        root = Path(data)
        if not root.is_dir():
            raise DiscoZooError(f"--data {data}: no such folder; give an HR image folder with train/ and test/ "
                                f"(DIV2K/Set5 style) or --data {self.embedded_dataset}.")
        return root, root.name

    @staticmethod
    def _scale_of_folder(root: Path) -> int:
        """The scale of ``train_LR_x<r>`` LR images when the folder has them, else the default."""
        scales = sorted({int(p.name.rpartition("_x")[2]) for p in root.glob("train_LR_x*")
                         if p.is_dir() and p.name.rpartition("_x")[2].isdigit()})
        if len(scales) > 1:
            raise DiscoZooError(f"{root} holds LR folders for several scales ({scales}); keep the one you train for.")
        return scales[0] if scales else DEFAULT_SCALE

    @staticmethod
    def _whole(pairs: list[SRPair]) -> list[tuple[Any, SRTarget]]:
        from disco_zoo.data.sr_images import to_tensor, whole_images

        return whole_images(pairs, lambda pair: SRTarget(to_tensor(pair.hr), pair.scale))

    def load_train_data(self, data: str, input_size: int, batch_size: int, seed: int, limit: int | None,
                        augment: bool) -> TrainData:
        """``train``: :data:`PATCHES_PER_EPOCH` random LR patches of ``input_size`` a side
        (``limit``: that many patches, and the first ``limit`` images of each split); ``val``
        and ``test``: whole images, one per batch (``val`` is ``test`` without a val/ folder)."""
        from disco_zoo.data.sr_images import RandomPatches, read_pairs

        root, name = self._root(data)
        scale = self._scale_of_folder(root)
        train = RandomPatches(read_pairs(root, "train", scale, limit), input_size,
                              limit if limit is not None else PATCHES_PER_EPOCH, batch_size, seed)
        test = self._whole(read_pairs(root, "test", scale, limit))
        val = self._whole(read_pairs(root, "val", scale, limit)) if (root / "val").is_dir() else test
        return TrainData({"train": train, "val": val, "test": test}, _photos_info(name), {"scale": scale})

    def eval_split(self, data: str, config: FolderConfig) -> EvalSplit:
        """The whole test images of ``data`` at the model's scale (``config.args``)."""
        from disco_zoo.data.sr_images import read_pairs

        if tuple(config.mean) != (0.0,) * len(config.mean) or tuple(config.std) != (1.0,) * len(config.std):
            raise DiscoZooError(f"{config.name}: a super-resolution model here maps [0, 1] RGB to [0, 1] RGB, so its "
                                f"mean/std must be 0/1, not {list(config.mean)}/{list(config.std)}.")
        scale = int(config.args.get("scale", DEFAULT_SCALE))
        root, _ = self._root(data)
        batches = self._whole(read_pairs(root, "test", scale))
        return EvalSplit([b[0] for b in batches], [b[1] for b in batches], data)

    # -- training, outputs, metrics ---------------------------------------------------------

    def training_loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L1 between the model's output and the HR patch (EDSR's loss)."""
        import torch.nn.functional as F

        outputs = model(inputs)
        if outputs.shape != targets.shape:
            raise DiscoZooError(f"the model turns a {tuple(inputs.shape[-2:])} LR patch into "
                                f"{tuple(outputs.shape[-2:])}, but the HR patch is {tuple(targets.shape[-2:])}: the "
                                "model's scale (--arg scale) is not the data's.")
        return F.l1_loss(outputs, targets)

    def distillation_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """L1 to the teacher's image, the loss the model trains with against the HR patch."""
        import torch.nn.functional as F

        return F.l1_loss(student, teacher)

    def predictions(self, outputs: Any) -> torch.Tensor:
        """Model outputs (a tensor, or nested lists as the root rank reports them) ->
        images clamped to [0, 1] and rounded to 8-bit levels."""
        import torch

        return torch.as_tensor(outputs).detach().float().clamp(0, 1).mul(255).round().div(255)

    def summary(self, outputs: Any) -> dict[str, Any]:
        image = self.predictions(outputs)[0]
        return {"output_shape": list(image.shape), "min": float(image.min()), "max": float(image.max())}

    def summary_line(self, summary: dict[str, Any]) -> str:
        channels, height, width = summary["output_shape"]
        return f"upscaled image {channels}x{height}x{width}, values in [{summary['min']:.3f}, {summary['max']:.3f}]"

    def score(self, predictions: Sequence[Any], targets: Sequence[SRTarget]) -> dict[str, float]:
        """Mean PSNR and SSIM on Y over images (one prediction per target, in order)."""
        predictions, targets = list(predictions), list(targets)
        if len(predictions) != len(targets) or not targets:
            raise DiscoZooError(f"{len(predictions)} predictions for {len(targets)} targets; score needs one per "
                                "image.")
        scores = [_y_scores(_numpy(p), _numpy(t.hr), t.scale) for p, t in zip(predictions, targets)]
        return {PSNR.name: float(np.mean([s[0] for s in scores])), SSIM.name: float(np.mean([s[1] for s in scores]))}

    def concat(self, parts: Sequence[Any]) -> list[Any]:
        """Per-image batches -> one list of images (they differ in size, so no tensor holds them)."""
        joined: list[Any] = []
        for part in parts:
            if isinstance(part, SRTarget):
                joined.append(part)
            elif isinstance(part, (list, tuple)):
                joined.extend(part)
            else:
                joined.extend(part[i:i + 1] for i in range(len(part)))
        return joined
