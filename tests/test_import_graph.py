"""The shape of the package: no import cycle anywhere in `hbscreen`, and the inference core a
leaf (it imports nothing from the bot, the CLI, the settings, training or the stand-in).

Every `import` statement counts, also those inside functions and under TYPE_CHECKING: a cycle
hidden in a lazy import is still a cycle for the reader (and for the next refactoring)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import hbscreen

# Where the core must not reach: layers above it, and tooling.
FORBIDDEN_FOR_INFERENCE = (
    "hbscreen.bot",
    "hbscreen.settings",
    "hbscreen.cli",
    "hbscreen.screen",
    "hbscreen.compose",
    "hbscreen.training",
    "hbscreen.standin",
)


def _package_dirs() -> dict[str, Path]:
    """Each (sub)package of `hbscreen` -> its folder, without importing any of them but the
    top-level package (the folders map through setuptools' package-dir)."""
    out: dict[str, Path] = {}
    todo = [("hbscreen", Path(p)) for p in hbscreen.__path__]
    for name in ("hbscreen.bot", "hbscreen.inference", "hbscreen.training"):
        spec = importlib.util.find_spec(name)
        assert spec and spec.submodule_search_locations, name
        todo += [(name, Path(p)) for p in spec.submodule_search_locations]
    while todo:
        name, folder = todo.pop()
        if name in out:
            continue
        out[name] = folder
        for sub in folder.iterdir():
            if (sub / "__init__.py").is_file() and f"{name}.{sub.name}" not in out:
                todo.append((f"{name}.{sub.name}", sub))
    return out


def modules() -> dict[str, Path]:
    """Every module of the package -> its source file."""
    out: dict[str, Path] = {}
    for pkg, folder in _package_dirs().items():
        for f in folder.glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The `hbscreen` modules one module imports (any statement, any depth)."""
    is_pkg = path.name == "__init__.py"
    base = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                root = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{root}.{node.module}" if node.module else root
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_whole_package() -> None:
    g = graph()
    for m in (
        "hbscreen.cli",
        "hbscreen.compose",
        "hbscreen.bot.app",
        "hbscreen.bot.handlers.photo",
        "hbscreen.inference.worker",
        "hbscreen.inference.queue.protocol",
        "hbscreen.inference.queue.redis_streams.submitter",
        "hbscreen.training.train",
    ):
        assert m in g, m
    assert "hbscreen.inference.worker" in g["hbscreen.compose"]
    # the walker finds relative imports too: the cycle test cannot pass by seeing nothing
    assert "hbscreen.inference.queue.protocol" in g["hbscreen.inference.queue.memory"]


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_inference_core_is_a_leaf() -> None:
    bad = {
        (m, dep)
        for m, deps in graph().items()
        if m.startswith("hbscreen.inference")
        for dep in deps
        if dep.startswith(FORBIDDEN_FOR_INFERENCE)
    }
    assert not bad, sorted(bad)
