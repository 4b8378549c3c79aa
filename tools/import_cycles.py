"""``python -m tools.import_cycles``: no import circle in the package, no
module circle in the crate (`make lint` runs it; exit 1 naming each circle).

Python (``python/shmcache``): a module is a node; every import between the
package's modules is an edge, deferred ones (inside functions) too;
imports under ``if TYPE_CHECKING:`` are left out (they never run). A
package's ``__init__`` is a module like the others.

Rust (``src/``): a file is a module (``a/mod.rs`` and ``a.rs`` are ``a``);
each path that names another module of the crate (``crate::a::b``,
``super::x``, ``self::y``, in ``use`` lists and in code) is a reference to
the deepest module it names. A module may use its ancestors' items (the
Rust idiom: ``impl`` blocks for a parent's types in a child, a narrow
``mod.rs`` holding what its children share) and its descendants'; between
any two other modules the reference counts between the children of their
closest common ancestor, and within every folder those references must go
one way. ``#[cfg(test)]`` modules and ``src/**/tests*`` files are left out.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- graphs


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan),
    each as a sorted list; a self-edge is not a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


# ---------------------------------------------------------------- Python


def python_modules(pkg_dir: Path) -> dict[str, Path]:
    """Dotted name -> file, for every .py module of the package."""
    base = pkg_dir.parent
    mods = {}
    # A compiled module (shmcache._core) is a node through its stub.
    files = sorted(pkg_dir.rglob("*.py")) + [f for f in sorted(pkg_dir.rglob("*.pyi")) if not f.with_suffix(".py").exists()]
    for f in files:
        parts = list(f.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, TYPE_CHECKING blocks aside."""
    todo = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                todo.extend(child.orelse)  # the else branch runs
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            todo.append(child)


def python_graph(pkg_dir: Path) -> dict[str, set[str]]:
    mods = python_modules(pkg_dir)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import sub` imports the module pkg.sub; `from
                # mod import name` imports mod.
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            for t in targets:
                while t and t not in mods:  # import a.b.c of a non-module attribute: a.b
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


# ---------------------------------------------------------------- Rust

_PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{)?")


def rust_modules(src: Path) -> dict[tuple[str, ...], Path]:
    """Module path -> file, for every module file of the crate (tests aside)."""
    mods = {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src).with_suffix("").parts
        if any(p == "tests" or p.startswith("tests_") or p.endswith("_tests") for p in rel):
            continue
        if rel in (("lib",), ("main",)):
            path: tuple[str, ...] = ()
        elif rel[-1] == "mod":
            path = tuple(rel[:-1])
        else:
            path = tuple(rel)
        mods[path] = f
    return mods


def _strip(code: str) -> str:
    """Code without comments, strings and #[cfg(test)] modules."""
    code = re.sub(r"//[^\n]*", "", code)
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    code = re.sub(r'r#*"(?:.|\n)*?"#*|"(?:\\.|[^"\\])*"', '""', code)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", code):
        if m.start() < i:
            continue
        out.append(code[i : m.start()])
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        i = j
    out.append(code[i:])
    return "".join(out)


def _brace_items(code: str, start: int) -> list[str]:
    """The paths inside a `use x::{...}` list starting at `start` (after the brace), one level deep and nested."""
    depth, j, buf, items = 1, start, "", []
    prefix_stack = [""]
    while j < len(code) and depth:
        c = code[j]
        if c == "{":
            prefix_stack.append(prefix_stack[-1] + buf.strip())
            buf = ""
            depth += 1
        elif c == "}":
            if buf.strip():
                items.append(prefix_stack[-1] + buf.strip())
            buf = ""
            prefix_stack.pop()
            depth -= 1
        elif c == ",":
            if buf.strip():
                items.append(prefix_stack[-1] + buf.strip())
            buf = ""
        else:
            buf += c
        j += 1
    return [re.sub(r"\s+", "", i).split(" as ")[0] for i in items]


def rust_graph(src: Path) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    mods = rust_modules(src)
    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in mods}

    def resolve(here: tuple[str, ...], root: str, rest: list[str]) -> tuple[str, ...] | None:
        if root == "crate":
            path = []
        elif root == "super":
            path = list(here[:-1])
        else:
            path = list(here)
        while rest and rest[0] == "super":
            path, rest = path[:-1], rest[1:]
        best = tuple(path)
        for part in rest:
            path.append(part)
            if tuple(path) in mods:
                best = tuple(path)
            else:
                break
        return best if best in mods else None

    for here, f in mods.items():
        code = _strip(f.read_text())
        for m in _PATH.finditer(code):
            root = m.group(1)
            rest = [p for p in m.group(2).split("::") if p]
            heads = [rest]
            if m.group(3):  # crate::a::{b, c::d}
                heads = [rest + [p for p in item.split("::") if p and p != "self"] for item in _brace_items(code, m.end())]
            for parts in heads:
                t = resolve(here, root, parts)
                if t is not None and t != here:
                    graph[here].add(t)
    return graph


def rust_layer_graph(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> dict[str, set[str]]:
    """Each reference as an edge between the children of the two modules'
    closest common ancestor (ancestor/descendant references aside); node
    names are module paths joined by '::' ('crate::x::y')."""
    out: dict[str, set[str]] = {}
    for a, targets in graph.items():
        for b in targets:
            n = 0
            while n < min(len(a), len(b)) and a[n] == b[n]:
                n += 1
            if n == len(a) or n == len(b):
                continue  # one contains the other
            ca, cb = "::".join(("crate", *a[: n + 1])), "::".join(("crate", *b[: n + 1]))
            out.setdefault(ca, set()).add(cb)
            out.setdefault(cb, set())
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    bad = 0
    for circle in cycles(python_graph(ROOT / "python" / "shmcache")):
        print(f"import circle in python/shmcache: {' <-> '.join(circle)}")
        bad += 1
    for circle in cycles(rust_layer_graph(rust_graph(ROOT / "src"))):
        print(f"module circle in src/: {' <-> '.join(circle)}")
        bad += 1
    if not bad:
        print("no import circle in python/shmcache, no module circle in src/")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
