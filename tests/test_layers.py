"""One-way layers (README "Layout"): every ``stepprune`` import, module level or inside a
function, read from the source with ``ast``.

- Data flows up: root modules < data < backends < cot < generation, pruning < evaluation, train
  < rl, scaleout < stages < cli. A module imports only its own area or lower ones; the one
  stage-to-stage import allowed is bench composing generate.
- No import circle among modules, function-level imports counted.
- No ``_private`` name imported from another subpackage.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "stepprune"
RANK = {"root": 0, "data": 1, "backends": 2, "cot": 3, "generation": 4, "pruning": 4}
RANK.update({"evaluation": 5, "train": 5, "rl": 6, "scaleout": 6, "stages": 7, "cli": 8})
STAGE_CALLS = {("stepprune.stages.bench", "stepprune.stages.generate")}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("stepprune", *parts)).removesuffix(".__init__")
        out[name] = path
    return out


def area(name: str, path: Path) -> str:
    parts = name.split(".")
    if len(parts) == 1:  # the package's own __init__ (its version)
        return "root"
    if len(parts) == 2 and path.name != "__init__.py":
        return "cli" if parts[1] == "cli" else "root"
    return parts[1]


def imports(name: str, path: Path, known: dict) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every stepprune import in the file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                full = f"{module}.{alias.name}"
                found.append(
                    (full, None, node.lineno)
                    if full in known
                    else (module, alias.name, node.lineno)
                )
    return [(m, sym, line) for m, sym, line in found if m in known]


def graph() -> tuple[dict, list]:
    known = modules()
    edges, records = {}, []
    for name, path in known.items():
        for target, symbol, line in imports(name, path, known):
            edges.setdefault(name, set()).add(target)
            records.append((name, path, target, known[target], symbol, line))
    return edges, records


def test_no_module_imports_a_higher_layer():
    _, records = graph()
    upward = []
    for name, path, target, target_path, _, line in records:
        mine, theirs = area(name, path), area(target, target_path)
        if mine == theirs and mine != "stages" or (name, target) in STAGE_CALLS:
            continue
        if RANK[theirs] > RANK[mine] or (mine == theirs == "stages" and name != target):
            upward.append(f"{name}:{line} imports {target} ({mine} < {theirs})")
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    edges, _ = graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in list(modules()):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_no_private_name_crosses_a_subpackage():
    _, records = graph()
    crossing = [
        f"{name}:{line} imports {target}.{symbol}"
        for name, path, target, target_path, symbol, line in records
        if symbol
        and symbol.startswith("_")
        and not symbol.endswith("__")  # dunders (__version__) are public
        and area(name, path) != area(target, target_path)
    ]
    assert not crossing, "\n".join(crossing)


def test_the_checks_see_function_level_imports_and_circles(tmp_path, monkeypatch):
    """The AST walk counts an import inside a function, and a two-module circle is found."""
    pkg = tmp_path / "stepprune"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "stages" / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from stepprune.stages.b import _g\n")
    (pkg / "stages" / "b.py").write_text("from stepprune.data import a\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    _, records = graph()
    assert ("stepprune.data.a", "stepprune.stages.b", "_g") in {(r[0], r[2], r[4]) for r in records}
    edges, _ = graph()
    assert "stepprune.stages.b" in edges["stepprune.data.a"]
    assert "stepprune.data.a" in edges["stepprune.stages.b"]
