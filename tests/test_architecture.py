"""The package's shape: imports point one way, and nothing outside the adapters and the
model files branches on a model family or a model name."""
import ast
from pathlib import Path

import disco_zoo
from disco_zoo.registry import get_entry, list_models

PACKAGE = Path(disco_zoo.__file__).resolve().parent
# Where naming a family or an architecture is the point (they define them).
ALLOWED_TO_NAME_MODELS = ("disco/adapters/", "models/")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        mods[name] = path
    return mods


def _import_edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """module -> package modules it imports, counting imports inside functions too."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                root = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
                mod = ".".join(x for x in (root, node.module or "") if x)
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    edges[module].add(target)
    return edges


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for nxt in sorted(edges[m]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = _find_cycle(_import_edges(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_loading_points_down():
    """registry <- store <- weight formats <- hub <- the public API (DESIGN.md, loading)."""
    edges = _import_edges(_modules())
    order = ["disco_zoo.registry", "disco_zoo.store", "disco_zoo.weights", "disco_zoo.disco.shards",
             "disco_zoo.hub", "disco_zoo.api"]
    for i, lower in enumerate(order):
        for higher in order[i + 1:]:
            assert higher not in edges[lower], f"{lower} imports {higher}, which sits above it"


def _model_words() -> set[str]:
    names = set(list_models())
    return names | {get_entry(n).family for n in names}


def test_no_family_or_model_name_branches_outside_adapters_and_models():
    """A comparison against a family or architecture name, or a read of ``.family`` in a
    condition, outside the modules whose job is to define them, is a special case where a
    shared mechanism should be."""
    words = _model_words()
    found = []
    for module, path in _modules().items():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(ALLOWED_TO_NAME_MODELS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                consts = {p.value for p in parts if isinstance(p, ast.Constant) and isinstance(p.value, str)}
                for p in parts:
                    if isinstance(p, (ast.Tuple, ast.List, ast.Set)):
                        consts |= {e.value for e in p.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if consts & words:
                    found.append(f"{rel}:{node.lineno} compares with {sorted(consts & words)}")
                if any(isinstance(p, ast.Attribute) and p.attr == "family" for p in parts):
                    found.append(f"{rel}:{node.lineno} branches on .family")
    assert not found, "\n".join(found)
