"""Distributed runtime: one transport interface over MPI (default) and torch gloo,
byte counting, link emulation, a launcher and the DISCO executor.

See docs/CONTRACTS.md ("disco_zoo.runtime") for the API other modules code against.
"""
