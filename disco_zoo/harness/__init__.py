"""The eval harness, one module per job: accuracy, traffic, latency, the typed report
(:mod:`~disco_zoo.harness.report`), and the orchestrator
(:func:`~disco_zoo.harness.orchestrator.evaluate`) that runs them for one pretrained
DISCO model.

Importing the package is cheap: the records and options need no torch, so the model
cards and the CLI's printer read results without loading the runtime; ``evaluate`` is
imported on first use.
"""
from __future__ import annotations

from typing import Any

from disco_zoo.harness.options import DEFAULT_ROUNDS, EvalOptions
from disco_zoo.harness.report import SCHEMA_VERSION, EvalReport, ReportError

__all__ = ["evaluate", "EvalOptions", "DEFAULT_ROUNDS", "EvalReport", "ReportError", "SCHEMA_VERSION"]


def __getattr__(name: str) -> Any:
    if name == "evaluate":
        from disco_zoo.harness.orchestrator import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
