import torch
from torch import nn

from disco_zoo.train import TrainConfig, accuracy, fit, recalibrate_batchnorm


def _loader(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_fit_is_deterministic_and_learns():
    losses_a = fit(_net(), _loader(), TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    losses_b = fit(_net(), _loader(), TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    assert losses_a == losses_b
    assert losses_a[-1] < losses_a[0]


def test_recalibrate_batchnorm_restores_running_statistics():
    net, loader = _net(), _loader()
    fit(net, loader, TrainConfig(epochs=5, lr=1e-2), show_progress=False)
    reference = accuracy(net, loader)
    bn = net[1]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(100.0)
    assert accuracy(net, loader) < reference
    assert recalibrate_batchnorm(net, loader)
    assert bn.momentum == 0.1
    assert accuracy(net, loader) == reference or abs(accuracy(net, loader) - reference) <= 1 / 64
    assert not recalibrate_batchnorm(nn.Linear(2, 2), loader)
