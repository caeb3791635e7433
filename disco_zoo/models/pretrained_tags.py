"""Pretrained tags shared by several entries (torch-free; numbers checked against the data modules by tests)."""
from __future__ import annotations

from disco_zoo.registry import PretrainedCfg

# Trained here on scikit-learn's digits upscaled to 32x32 (disco_zoo.data.digits; recipe in eval/recipes.sh).
DIGITS = PretrainedCfg(
    tag="digits",
    dataset="digits",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=(0.3053, 0.3053, 0.3053),
    std=(0.3760, 0.3760, 0.3760),
    description="trained on the embedded scikit-learn digits (32x32), seeded recipe in eval/recipes.sh",
)
