"""Print constraints.txt: the exact installed versions of disco-zoo's dependencies.

Why: pyproject.toml declares compatible ranges (a library must install beside others),
while CI and ``make setup`` must install exactly what was tested. Run it in the tested
venv; it walks pyproject's dependencies (every extra included) and their transitive
requirements (with the extras they ask for) as this platform evaluates them, and pins
each to the installed version.
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
# disco-zoo's dependencies (every extra included) and their transitive dependencies:
#   make constraints   (python tools/freeze_constraints.py > constraints.txt)
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(pyproject: Path) -> list[str]:
    """``name==version`` for every distribution the project needs here, sorted."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]  # test, edge, ...
    stack = [Requirement(r) for r in project["dependencies"] + extras]
    versions: dict[str, str] = {}
    done: set[tuple[str, str]] = set()  # (distribution, extra) pairs already walked; "" is the base
    while stack:
        wanted = stack.pop()
        name = normalise(wanted.name)
        extras = [""] + sorted(wanted.extras)  # e.g. torch needs cuda-toolkit[cublas,...]
        if all((name, extra) in done for extra in extras):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            sys.exit(f"{name} is required but not installed in {sys.prefix}: install the project first")
        versions[name] = dist.version
        for extra in extras:
            done.add((name, extra))
            for text in dist.requires or []:
                req = Requirement(text)
                if req.marker is None or req.marker.evaluate({"extra": extra}):
                    stack.append(req)
    return [f"{name}=={version}" for name, version in sorted(versions.items())]


if __name__ == "__main__":
    sys.stdout.write(HEADER + "\n".join(pins(Path(__file__).resolve().parent.parent / "pyproject.toml")) + "\n")
