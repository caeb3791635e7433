"""Layer graphs of traced models, and the accounting derived from them."""
from disco_zoo.graph.layer_graph import Layer, LayerGraph, trace_model

__all__ = ["Layer", "LayerGraph", "trace_model"]
