"""DISCO: within-layer model parallelism with sparse, learned cross-node channels.

    partition.py   the one JSON description (who holds/computes/receives which channels)
    masked.py      conv/linear with a 0/1 connectivity mask (single-process DISCO)
    adapters/      to_disco(model, nodes, ratios): ResNet, ViT, Swin, nn.Sequential
    sparsify.py    group lasso -> prune to a traffic (and FLOPs) budget -> fine-tune
    accounting.py  bytes per node pair, FLOPs / params / activation memory per node
    shards.py      one safetensors file per node + config.json, and their loaders

Submodules are imported explicitly; ``partition`` needs no torch.
"""
