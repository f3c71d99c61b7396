"""Import structure of the ``atoll`` package: no import cycles, and each layer imports only the layers below it.

Parsed with ``ast`` (module-level imports only: imports inside functions are deliberate deferrals and
``if TYPE_CHECKING:`` blocks never run), so the checks need no import of the package and future work
keeps them true. DESIGN.md's layer table is the reference.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "atoll"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _top_level(body: list) -> list:
    """Statements that run at import: the body, and the bodies of module-level if/try blocks."""
    out = []
    for node in body:
        if isinstance(node, ast.If):
            if not _is_type_checking(node):
                out += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            out += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for h in node.handlers:
                out += _top_level(h.body)
        else:
            out.append(node)
    return out


def imports(name: str) -> set[str]:
    """atoll modules that module ``name`` imports when it is imported."""
    path = MODULES[name]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "atoll":
                    found.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "atoll":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)  # `from pkg import submodule` or `from mod import name`
    return {m for m in found if m in MODULES and m != name}


def graph() -> dict[str, set[str]]:
    return {m: imports(m) for m in MODULES}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
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
        for w in sorted(g[v]):
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


def every_import(path: Path) -> set[str]:
    """Every module named by any import statement of ``path``, at any depth (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return out


#: DESIGN.md's layers, bottom-up (a module may import its own layer and the ones below)
LAYERS = [
    ("ground", ("atoll.errors", "atoll.wire", "atoll._process", "atoll._version", "atoll.datasets")),
    ("primitives", ("atoll.crypto",)),
    ("federation", ("atoll.federation",)),
    ("secure operators", ("atoll.secure",)),
    ("algorithms", ("atoll.ml",)),
    ("trusted execution", ("atoll.tee",)),
    ("jobs", ("atoll.jobs",)),
    ("node, board, serving", ("atoll.node", "atoll.board", "atoll.serving")),
    ("entry points", ("atoll", "atoll.cli", "atoll.horizontal", "atoll.demo")),
]


def layer(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (rank, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS here and to DESIGN.md's layer table"
    return best[0]


def test_the_parser_sees_imports_and_cycles():
    g = graph()
    assert {"atoll.crypto.cipherarray", "atoll.crypto.engine"} <= g["atoll.crypto.base"]
    assert "atoll.crypto.he" in g["atoll.federation.context"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_in_atoll():
    found = cycles(graph())
    assert not found, f"module-level import cycles: {found}; move the shared part into a module below both"


def test_each_layer_imports_only_layers_below():
    bad = [f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
           for m, deps in sorted(graph().items()) for d in sorted(deps) if layer(d) > layer(m)]
    assert not bad, "imports against DESIGN.md's layer table:\n" + "\n".join(bad)


def test_the_codec_never_imports_a_scheme_not_even_by_string():
    """``atoll.wire`` sits below the schemes: they register their wire types with it (atoll.crypto.registry)."""
    src = MODULES["atoll.wire"].read_text()
    assert "importlib" not in src and "__import__" not in src and "import_module" not in src
    assert {m for m in every_import(MODULES["atoll.wire"]) if m.startswith(("atoll", "."))} == {"atoll.errors"}


def test_crypto_imports_only_the_ground_and_itself():
    for name, path in MODULES.items():
        if name.startswith("atoll.crypto"):
            for m in every_import(path):
                if m.startswith("."):
                    continue
                if m.split(".")[0] == "atoll":
                    assert layer(m) <= layer("atoll.crypto"), f"{name} imports {m}"
