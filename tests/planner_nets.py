"""Tiny hand-built nets and profiles shared by the planner tests."""
from __future__ import annotations

import random

import torch
from torch import nn

from disco_zoo.planner import profile_from_dict


class Branchy(nn.Module):
    """Conv stem, a residual add, a two-branch channel concat, a pooled head."""

    def __init__(self, k1: int = 3, s1: int = 1, k2: int = 3, d2: int = 1, pool: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, k1, stride=s1, padding=k1 // 2)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, k2, padding=d2 * (k2 // 2), dilation=d2)
        self.b1 = nn.Conv2d(8, 4, 1)
        self.b2 = nn.Conv2d(8, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(pool, stride=pool, ceil_mode=True)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = x + torch.relu(self.a(x))
        x = torch.cat([self.b1(x), self.b2(x)], dim=1)
        x = self.pool(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def random_profile(rng: random.Random, n: int) -> object:
    devices = [{"name": f"d{i}", "flops": rng.choice([1e6, 3e6, 1e7, 4e7])} for i in range(n)]
    pairs = [{"between": [f"d{i}", f"d{j}"], "bandwidth_bps": rng.choice([1e5, 1e6, 1e7, 1e8]),
              "latency_s": rng.choice([0.0, 1e-4, 1e-3])}
             for i in range(n) for j in range(i + 1, n) if rng.random() < 0.7]
    return profile_from_dict({"devices": devices, "links": {
        "default": {"bandwidth_bps": rng.choice([1e6, 1e7]), "latency_s": 1e-4}, "pairs": pairs}})


def three_devices(memory: float | None = None) -> object:
    mem = {} if memory is None else {"memory_bytes": memory}
    return profile_from_dict({"devices": [{"name": "a", "flops": 2e7, **mem}, {"name": "b", "flops": 1e7, **mem},
                                          {"name": "c", "flops": 5e6, **mem}],
                              "links": {"default": {"bandwidth_bps": 1e8, "latency_s": 1e-4}}})
