"""Shared test set-up: small thread counts so parallel test processes do not oversubscribe."""
import torch

torch.set_num_threads(1)
