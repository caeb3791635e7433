"""The lean node runner: a DISCO node's exported ONNX program on onnxruntime, no torch.

Imports only onnxruntime, numpy, mpi4py and the torch-free parts of disco_zoo (the
store's hashing, the wire core, link emulation, errors), so a device runs its node with
a fraction of a torch process's memory. Start it as

    mpiexec -hosts h1,h2 -n 2 python -m disco_zoo.edge --program DIR

(``DIR`` from ``disco-zoo export MODEL --format onnx --out DIR``; rank k runs
``DIR/node{k}``), or ``disco-zoo run MODEL --engine onnx``.
"""
