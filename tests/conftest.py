"""Shared test set-up: small thread counts so parallel test processes do not oversubscribe."""
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "netns: needs root and iproute2 (ip netns, tc); skipped with the reason elsewhere"
    )
