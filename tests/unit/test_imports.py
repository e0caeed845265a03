"""Every module of the catlip package imports on its own, as the first catlip module of a fresh process.

An import cycle breaks only when the cycle is entered from a particular module, so each module is imported first
in a process of its own. Paying the interpreter + torch start-up once per module would take minutes, so a parent
process imports the third-party libraries the package uses (never a catlip module) and forks one child per
module: each child starts with no catlip module loaded, exactly like ``python -c "import catlip.X"``. Where
``os.fork`` does not exist, each module gets a plain ``python -c`` subprocess instead (slower, same check).

Two static checks on the source come with it: no cycle among the catlip modules' top-level imports, and nothing in
the package imports ``catlip.cli`` (the command line is the top layer; ``labels/tools`` once imported its error
class from there).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import catlip

PACKAGE = Path(catlip.__file__).resolve().parent


def _module_files() -> dict[str, tuple[Path, bool]]:
    """``catlip.x.y`` -> (source file, is a package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["catlip", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _module_files()


def _imports(tree: ast.AST, module: str, is_pkg: bool, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each import statement, relative ones resolved."""
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_pkg else -1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def _third_party_modules() -> list[str]:
    """Every non-catlip module the package imports anywhere (the parent preloads them before forking)."""
    names = set()
    for module, (path, is_pkg) in MODULES.items():
        for target, _, _ in _imports(ast.parse(path.read_text()), module, is_pkg, top_level_only=False):
            if target and target.split(".")[0] not in ("catlip", "__future__"):
                names.add(target)
    return sorted(names)


# Run by a fresh interpreter: argv = modules to check, stdin = third-party modules to preload.
FORKING_CHECKER = textwrap.dedent("""
    import importlib, os, sys, traceback

    for name in sys.stdin.read().split():
        try:
            importlib.import_module(name)
        except BaseException:  # optional or broken dependencies show up again in the child that needs them
            pass
    preloaded = sorted(m for m in sys.modules if m == "catlip" or m.startswith("catlip."))
    if preloaded:
        sys.exit(f"the preload imported catlip modules {preloaded}; the check would not start fresh")
    failed = 0
    for module in sys.argv[1:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: no catlip module loaded yet
            os.close(read)
            code, report = 0, b""
            try:
                importlib.import_module(module)
            except BaseException:
                code, report = 1, traceback.format_exc().encode()
            with os.fdopen(write, "wb") as pipe:
                pipe.write(report)
            os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            report = pipe.read().decode(errors="replace")
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed += 1
            print(f"=== import {module} failed (status {status})\\n{report}", file=sys.stderr)
    sys.exit(1 if failed else 0)
""")


def test_every_module_imports_first_in_a_fresh_process():
    modules = sorted(MODULES)
    assert len(modules) > 30 and "catlip.cli" in modules and "catlip.errors" in modules
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if hasattr(os, "fork"):
        proc = subprocess.run([sys.executable, "-c", FORKING_CHECKER, *modules], input="\n".join(
            _third_party_modules()), capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-20000:]
        return
    failures = []
    for module in modules:  # pragma: no cover - platforms without fork
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env,
                              timeout=300)
        if proc.returncode != 0:
            failures.append(f"=== import {module} failed\n{proc.stderr}")
    assert not failures, "\n".join(failures)


def test_the_forking_check_reports_a_broken_module(tmp_path):
    """The checker itself: a module that cannot be imported makes it fail, naming the module."""
    (tmp_path / "brokenmod.py").write_text("import catlip.errors\nfrom catlip.errors import NoSuchName\n")
    (tmp_path / "finemod.py").write_text("import catlip.errors\n")
    if not hasattr(os, "fork"):  # pragma: no cover
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", FORKING_CHECKER, "finemod", "brokenmod"], input="json",
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "import brokenmod failed" in proc.stderr and "NoSuchName" in proc.stderr
    assert "finemod" not in proc.stderr


def _top_level_graph() -> dict[str, set[str]]:
    """catlip module -> catlip modules it needs while it is being imported (its top-level import statements).

    ``from pkg import sub`` needs the submodule; ``from pkg import name`` needs ``pkg`` itself (its ``name`` must
    exist by then). A plain ``import`` of one of the module's own parent packages adds nothing: Python imports
    those before the module anyway.
    """
    graph = {}
    for module, (path, is_pkg) in MODULES.items():
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        needs = set()
        for target, names, _ in _imports(ast.parse(path.read_text()), module, is_pkg, top_level_only=True):
            if target not in MODULES:
                continue
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
            needs |= subs
            if len(subs) < len(names) or (not names and target not in ancestors):
                needs.add(target)
        graph[module] = needs - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_cycle_among_top_level_imports():
    assert _cycles(_top_level_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_in_the_package_imports_the_cli():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}" for module, (path, is_pkg) in MODULES.items()
                 if module not in ("catlip.cli", "catlip.__main__")
                 for target, names, line in _imports(ast.parse(path.read_text()), module, is_pkg, top_level_only=False)
                 if target == "catlip.cli" or (target == "catlip" and "cli" in names)]
    assert not offenders, f"import catlip.cli from inside the package (use catlip.errors): {offenders}"


# The declared layer order, bottom first (docs/design.md "Layers"). A module may import its own layer and the layers
# below it, at top level or inside a function: lazy imports are for start-up time, never a way around the direction.
LAYERS = (
    ("catlip", "catlip.errors", "catlip.atomic", "catlip.progress", "catlip.defaults", "catlip.runtime"),
    ("catlip.config",),
    ("catlip.data",),
    ("catlip.labels",),
    ("catlip.models",),
    ("catlip.losses",),
    ("catlip.methods",),
    ("catlip.train",),
    ("catlip.evaluate",),
    ("catlip.analysis",),
    ("catlip.plan",),
    ("catlip.config_keys", "catlip.demo"),
    ("catlip.cli", "catlip.__main__"),
)

# Upward imports not yet removed (issue 22). The list may only shrink: a new upward import fails the test, and so
# does an entry here that no longer occurs (delete it).
KNOWN_UPWARD: set[str] = {
    "catlip.config -> catlip.methods.registry",
    "catlip.data.feature_cache -> catlip.evaluate.common.features",
    "catlip.data.feature_cache -> catlip.train.distributed",
    "catlip.methods.lit -> catlip.train.checkpoint",
}


def layer_of(module: str) -> int:
    """The index in LAYERS of the longest prefix of ``module`` that names a layer member."""
    best, index = "", None
    for i, members in enumerate(LAYERS):
        for member in members:
            if (module == member or module.startswith(member + ".")) and len(member) > len(best):
                best, index = member, i
    if index is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in tests/unit/test_imports.py")
    return index


def upward_imports() -> list[str]:
    """``importer -> imported`` for every catlip import (any depth in the file) that points up the layer order."""
    found = []
    for module, (path, is_pkg) in MODULES.items():
        for target, names, _ in _imports(ast.parse(path.read_text()), module, is_pkg, top_level_only=False):
            if target != "catlip" and not target.startswith("catlip."):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for imported in subs or [target]:
                if layer_of(imported) > layer_of(module):
                    found.append(f"{module} -> {imported}")
    return sorted(set(found))


def test_every_module_has_a_layer():
    assert all(layer_of(m) >= 0 for m in MODULES)


def test_imports_point_down_the_layer_order():
    found = set(upward_imports())
    new, gone = sorted(found - KNOWN_UPWARD), sorted(KNOWN_UPWARD - found)
    assert not new, "imports that point up the layer order (docs/design.md, Layers):\n" + "\n".join(new)
    assert not gone, "no longer upward, delete from KNOWN_UPWARD:\n" + "\n".join(gone)


def test_layer_check_sees_an_upward_import_inside_a_function():
    tree = ast.parse("def f():\n    from catlip.train.checkpoint import find_checkpoint\n")
    targets = [t for t, _, _ in _imports(tree, "catlip.data.loader", False, top_level_only=False)]
    assert targets == ["catlip.train.checkpoint"]
    assert layer_of("catlip.train.checkpoint") > layer_of("catlip.data.loader")
    assert layer_of("catlip.labels.registry") < layer_of("catlip.methods.registry")
