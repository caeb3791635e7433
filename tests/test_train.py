import torch
import torch.nn.functional as F
from torch import nn

from disco_zoo.tasks import get_task
from disco_zoo.train import TrainConfig, fit, recalibrate_batchnorm

CLASSIFICATION = get_task("classification")


def _loader(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _top1(net, loader):
    return CLASSIFICATION.evaluate(net, loader)["top1"]


def test_fit_is_deterministic_and_learns():
    losses_a = fit(_net(), _loader(), TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    losses_b = fit(_net(), _loader(), TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    assert losses_a == losses_b
    assert losses_a[-1] < losses_a[0]


def test_fit_minimises_the_task_loss_it_is_given():
    # the default is the classification task's loss: passing it changes nothing
    default = fit(_net(), _loader(), TrainConfig(epochs=3, lr=1e-2), show_progress=False)
    given = fit(_net(), _loader(), TrainConfig(epochs=3, lr=1e-2), show_progress=False, loss=CLASSIFICATION.training_loss)
    assert default == given
    # any other task's loss (here: regression on the first feature) trains through the same loop
    regression = [(x, x[:, :1]) for x, _ in _loader()]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    losses = fit(net, regression, TrainConfig(epochs=20, lr=3e-2), show_progress=False,
                 loss=lambda model, inputs, targets: F.mse_loss(model(inputs), targets))
    assert losses[-1] < losses[0] / 2


def test_recalibrate_batchnorm_restores_running_statistics():
    net, loader = _net(), _loader()
    fit(net, loader, TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    reference = _top1(net, loader)
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(100.0)
    assert _top1(net, loader) < reference
    assert recalibrate_batchnorm(net, loader)
    assert bn.momentum == 0.1
    assert abs(_top1(net, loader) - reference) <= 1 / 64
    assert not recalibrate_batchnorm(nn.Linear(2, 2), loader)
