"""Distillation from the dense teacher: the divergence, the wrapped loss, and sparsify with it."""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from disco_zoo.data.digits import digits_loaders
from disco_zoo.disco.adapters import to_disco
from disco_zoo.disco.sparsify import SparsifyConfig, sparsify
from disco_zoo.distill import distilled_loss, logit_distillation
from disco_zoo.errors import DiscoZooError
from disco_zoo.tasks import get_task

SHAPE = (1, 3, 16, 16)


def test_logit_distillation_is_the_tempered_kl():
    teacher = torch.tensor([[2.0, 0.0]])
    student = torch.tensor([[0.0, 1.0]])
    p = torch.softmax(teacher / 2, 1)[0]
    q = torch.softmax(student / 2, 1)[0]
    expected = 4 * sum(p[i] * math.log(p[i] / q[i]) for i in range(2))
    assert logit_distillation(student, teacher, 2.0).item() == pytest.approx(float(expected), rel=1e-6)
    assert logit_distillation(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    pixels = torch.randn(2, 5, 3, 3)  # per pixel: the mean over images and positions
    per_pixel = torch.stack([logit_distillation(pixels[:, :, i, j], pixels.flip(0)[:, :, i, j])
                             for i in range(3) for j in range(3)])
    assert logit_distillation(pixels, pixels.flip(0)).item() == pytest.approx(per_pixel.mean().item(), rel=1e-5)


def test_each_task_kind_measures_the_teacher_distance():
    logits = torch.randn(2, 4, 3, 3)
    assert get_task("segmentation").distillation_loss({"out": logits}, {"out": logits}).item() == pytest.approx(0, abs=1e-6)
    assert get_task("classification").distillation_loss(logits[:, :, 0, 0], logits[:, :, 0, 0] + 1).item() == \
        pytest.approx(0, abs=1e-6)  # a shift of every logit is the same distribution
    image = torch.rand(1, 3, 4, 4)
    assert get_task("super_resolution").distillation_loss(image, image + 0.5).item() == pytest.approx(0.5)


def test_distilled_loss_adds_the_weighed_divergence_and_freezes_the_teacher():
    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3)
    inputs, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    task_loss = get_task("classification").training_loss
    loss = distilled_loss(task_loss, student, logit_distillation, 0.5)
    calls = []
    student.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        student.weight.add_(1.0)  # the teacher is the model as it was
    value = loss(student, inputs, targets)
    assert len(calls) == 1  # the student ran once: the hook took the outputs the task's loss computed
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 3)
    expected = F.cross_entropy(student(inputs), targets) + 0.5 * logit_distillation(student(inputs), teacher(inputs))
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert student.weight.grad is not None


def _tiny(distill: float):
    torch.manual_seed(0)
    model = to_disco(timm.create_model("resnet18", num_classes=10), 2)
    loader = digits_loaders(size=16, batch_size=32, seed=0, limit=64)["train"]
    cfg = SparsifyConfig(traffic=0.2, epochs=1, finetune_epochs=1, seed=0, penalty=1e-2, lr=1e-2, distill=distill)
    stats = sparsify(model, loader, cfg, SHAPE)
    return model, stats


def test_sparsify_with_a_teacher_is_deterministic_and_differs_from_labels_only():
    a, stats_a = _tiny(1.0)
    b, stats_b = _tiny(1.0)
    plain, stats_plain = _tiny(0.0)
    assert stats_a == stats_b
    for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(ta, tb)
    assert stats_a["finetune_loss"] != stats_plain["finetune_loss"]
    with pytest.raises(DiscoZooError, match="distill must be >= 0"):
        sparsify(plain, iter(()), SparsifyConfig(distill=-1.0), SHAPE)


def test_cli_distill_needs_the_dense_teacher(tmp_path):
    from disco_zoo.cli import app

    result = CliRunner().invoke(app, ["sparsify", "resnet18", "--distill", "1", "--out", str(tmp_path / "m")])
    assert result.exit_code != 0
    assert "--distill needs --init" in str(result.exception)
    assert not (tmp_path / "m").exists()
