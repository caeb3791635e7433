"""disco-zoo: vision models distributed across small devices.

Importing the package is cheap (no torch); model code is imported when a model is built.
"""
from disco_zoo.registry import create_model, get_pretrained_cfg, list_models, list_pretrained

__all__ = ["create_model", "get_pretrained_cfg", "list_models", "list_pretrained"]
__version__ = "0.1.0"
