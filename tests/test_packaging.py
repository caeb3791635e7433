"""The package as pip installs it: its data files, the published index, dependency
declarations and pins, the licence, and a built wheel used from outside the clone."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from disco_zoo.hub import REPO_HUB
from disco_zoo.published import INDEX_PATH, render_index
from helpers import copy_to_hf_cache

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
IMPORT_NAMES = {"scikit-learn": "sklearn", "scikit-image": "skimage", "pillow": "PIL", "huggingface-hub": "huggingface_hub"}
NOT_IMPORTED = {"mpich": "the MPI library and mpiexec that mpi4py and the launcher use"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extra: str | None = None) -> list[Requirement]:
    texts = PROJECT["optional-dependencies"][extra] if extra else PROJECT["dependencies"]
    return [Requirement(t) for t in texts]


def _pins() -> dict[str, str]:
    lines = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    return {_normal(name): version for name, _, version in (line.partition("==") for line in lines)}


def test_the_published_index_is_generated_from_hub_and_up_to_date():
    assert INDEX_PATH.read_text() == render_index(REPO_HUB), "stale: run `disco-zoo hub index`"
    index = json.loads(INDEX_PATH.read_text())["models"]
    assert sorted(index) == sorted(p.name for p in REPO_HUB.iterdir() if (p / "config.json").is_file())
    for name, item in index.items():
        config = json.loads((REPO_HUB / name / "config.json").read_text())
        assert item["hf_hub_id"] == config["hf_hub_id"]  # every folder names its repository


HUB_BUDGET_BYTES = 250_000_000  # issue 14: hub/ (in git, every blob kept for ever) stays under 250 MB in all


def test_the_hub_stays_within_its_budget():
    sizes = {folder.name: sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
             for folder in REPO_HUB.iterdir() if folder.is_dir()}
    total = sum(sizes.values()) + sum(f.stat().st_size for f in REPO_HUB.iterdir() if f.is_file())
    largest = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(sizes.items(), key=lambda i: -i[1])[:3])
    assert total < HUB_BUDGET_BYTES, f"hub/ holds {total / 1e6:.1f} MB (largest: {largest})"


def test_every_data_file_in_the_package_is_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]
    data = [p for p in (REPO / "disco_zoo").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert data, "the presets at least"
    for path in data:
        rel = path.relative_to(REPO)
        owners = [pkg for pkg in patterns if rel.parts[:len(pkg.split("."))] == tuple(pkg.split("."))]
        assert any(fnmatch(str(rel.relative_to(Path(*pkg.split(".")))), pattern)
                   for pkg in owners for pattern in patterns[pkg]), f"{rel} is not shipped in the wheel"


def test_ranges_are_declared_and_constraints_pin_each_within_its_range():
    pins = _pins()
    for req in _requirements() + _requirements("test") + _requirements("edge"):
        assert req.specifier and not any(s.operator == "==" for s in req.specifier), f"{req}: a range, not a pin"
        assert _normal(req.name) in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[_normal(req.name)]), f"constraints.txt pins {req.name} outside {req}"


def test_constraints_are_what_this_environment_runs():
    """The pins are the tested set: what the freeze tool finds installed here, exactly."""
    spec = importlib.util.spec_from_file_location("freeze_constraints", REPO / "tools" / "freeze_constraints.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    frozen = dict(line.split("==") for line in tool.pins(REPO / "pyproject.toml"))
    assert frozen == _pins(), "constraints.txt is stale or this venv drifted: `make constraints`, or reinstall"


def test_every_declared_dependency_is_imported():
    code = "\n".join(p.read_text() for p in [*(REPO / "disco_zoo").rglob("*.py"), REPO / "hubconf.py"])
    tests = "\n".join(p.read_text() for p in (REPO / "tests").rglob("*.py"))
    for req, source in [*((r, code) for r in [*_requirements(), *_requirements("edge")]),
                        *((r, tests) for r in _requirements("test"))]:
        name = _normal(req.name)
        if name in NOT_IMPORTED:
            continue
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", source, re.M), f"{req.name} is declared but never imported"


def test_requires_python_is_what_is_tested():
    assert SpecifierSet(PROJECT["requires-python"]).contains(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert PROJECT["requires-python"] == ">=3.11"
    assert sys.version_info[:2] == (3, 11)  # the tested interpreter; widen requires-python only with CI on others


def test_licence_file_matches_the_declared_licence():
    assert PROJECT["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text


def _site_packages() -> list[str]:
    """This interpreter's site-packages (the tested stack), to reuse from a fresh venv."""
    return sorted({p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()})


@pytest.mark.slow
def test_built_wheel_works_outside_the_clone(tmp_path):
    """Build the wheel, install it (no dependencies: the tested stack is reused) into a
    fresh venv, and from a folder outside the clone plan with a preset, list what is
    published, load a model and run a DISCO model from a local Hugging Face cache."""
    src = tmp_path / "src"  # what the wheel is built from, so the build leaves nothing in the clone
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "disco_zoo", src / "disco_zoo", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DISCO_ZOO_HUB", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, env=env, timeout=300)
    wheel = next((tmp_path / "dist").glob("disco_zoo-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_tested_stack.pth").write_text("\n".join(_site_packages()) + "\n")  # after the venv's own packages
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, env=env, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cache = tmp_path / "hf-cache"
    for name in ("resnet18.digits", "resnet18_disco_2node.digits"):
        copy_to_hf_cache(REPO_HUB / name, cache, f"disco-zoo/{name}")
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", COLUMNS="200")

    def cli(*args: str) -> str:
        out = subprocess.run([venv / "bin" / "disco-zoo", *args], cwd=outside, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    where = subprocess.run([venv / "bin" / "python", "-c", "import disco_zoo; print(disco_zoo.__file__)"], cwd=outside,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the clone's
    plan = json.loads(cli("plan", "resnet18", "--devices", "wifi-pi4-nano-phone", "--input-size", "32", "--json"))
    assert plan["edgeflow"]["latency_s"] > 0 and plan["baselines"]
    listed = json.loads(cli("list", "--pretrained", "--json"))
    assert sorted(r["name"] for r in listed) == sorted(p.name for p in REPO_HUB.iterdir() if p.is_dir())
    loaded = subprocess.run([venv / "bin" / "python", "-c",
                             "import disco_zoo, torch; m = disco_zoo.create_model('resnet18.digits', pretrained=True);"
                             "print(m.pretrained_cfg.name, m(torch.zeros(1, 3, 32, 32)).shape[-1])"],
                            cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["resnet18.digits", "10"]
    ran = json.loads(cli("run", "resnet18-disco-2node", "--backend", "gloo", "--json", "--timeout", "120"))
    assert ran["weights"] == "pretrained shards resnet18_disco_2node.digits" and ran["bytes_total"] > 0
    split = json.loads(cli("run", "resnet18.digits", "--nodes", "2", "--backend", "gloo", "--json", "--timeout", "120"))
    assert split["weights"] == "resnet18.digits (dense, split with masks open)" and split["nodes"] == 2
