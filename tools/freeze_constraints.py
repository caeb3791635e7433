"""Print constraints.txt: the exact installed versions of disco-zoo's dependencies.

Why: pyproject.toml declares compatible ranges (a library must install beside others),
while CI and ``make setup`` must install exactly what was tested. Run it in the tested
venv; it walks pyproject's dependencies (test extra included) and their transitive
requirements as this platform evaluates them, and pins each to the installed version.
"""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

HEADER = """\
# The exact versions CI and `make setup` install: the tested set (pyproject.toml keeps
# compatible ranges). Generated from the tested venv's installed distributions, limited to
# disco-zoo's dependencies (test extra included) and their transitive dependencies:
#   make constraints   (python tools/freeze_constraints.py > constraints.txt)
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(pyproject: Path) -> list[str]:
    """``name==version`` for every distribution the project needs here, sorted."""
    project = tomllib.loads(pyproject.read_text())["project"]
    stack = [Requirement(r).name for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    seen: dict[str, str] = {}
    while stack:
        name = normalise(stack.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed in {sys.prefix}: install the project first")
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(req.name)
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


if __name__ == "__main__":
    sys.stdout.write(HEADER + "\n".join(pins(Path(__file__).resolve().parent.parent / "pyproject.toml")) + "\n")
