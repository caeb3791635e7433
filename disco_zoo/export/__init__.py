"""Export a DISCO model as per-node ONNX programs (:mod:`.onnx_node`); the lean runner
that runs them is :mod:`disco_zoo.edge`."""
