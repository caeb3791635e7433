"""Model families: one module per family, each declaring registry entries and builders.

Entry modules must not import torch at import time: builders are referenced by string.
"""
