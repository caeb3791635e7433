"""disco-zoo: vision models distributed across small devices.

Importing the package is cheap (no torch); model code is imported when a model is built.
"""
from disco_zoo.api import create_model, create_transform, data_config
from disco_zoo.distributed_model import DistributedModel, distributed
from disco_zoo.hub import get_pretrained_cfg, list_pretrained
from disco_zoo.registry import list_models

__all__ = ["create_model", "create_transform", "data_config", "get_pretrained_cfg", "list_models", "list_pretrained"]
__all__ += ["distributed", "DistributedModel"]
__version__ = "0.1.0"
