"""The shape of gateway/: no import circle, not even one hidden behind a lazy import; every
module imports on its own in a fresh interpreter; the layers point one way (README "Layout").

The import graph is read from the source (ast): every `import gateway...` and
`from gateway... import ...`, at module level or inside a function, except under
`if TYPE_CHECKING:` (annotations only, never run). If that graph has no cycle, no lazy import
can exist only to break a circle: the lazy imports left (an optional heavy dependency such as
FastAPI, a twin chosen at run time) are edges of an acyclic graph.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "gateway"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of ours an imported name lives in (`gateway.pipeline.parse_stages` ->
    `gateway.pipeline`), or None (the extension, `gateway._native`, has no source here)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> dict[str, bool]:
    """module -> {imported module: True if at module level}."""
    tree = ast.parse(MODULES[module].read_text())
    skip: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skip |= {id(n) for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    out: dict[str, bool] = {}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name) if name.startswith("gateway") else None
            # a package's own submodules are not an edge back to it
            if target and target != module and not module.startswith(target + "."):
                out[target] = out.get(target, False) or id(node) in top
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for t in GRAPH[todo.pop()]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def test_no_import_cycle_even_through_lazy_imports():
    cycles = sorted(m for m in GRAPH if m in _closure(m))
    assert not cycles, f"modules on an import cycle (counting lazy imports): {cycles}"


def test_the_layers_point_one_way():
    # config is a leaf below every rung, shell and serving module
    for m in sorted(_closure("gateway.config")):
        assert not m.startswith(("gateway.rungs", "gateway.shells", "gateway.serving")), m
        assert m not in ("gateway.options", "gateway.background"), m
    # the rungs and shells never reach the server, the supervisor or the launcher
    serving_top = {"gateway.serving.server", "gateway.serving.supervisor", "gateway.serving.launch"}
    for m in MODULES:
        if m.startswith(("gateway.rungs", "gateway.shells")):
            assert not (_closure(m) & serving_top), (m, _closure(m) & serving_top)
    # shells talk to GatewayBase only, never to a rung's implementation
    for m in MODULES:
        if m.startswith("gateway.shells."):
            rungs = {t for t in GRAPH[m] if t.startswith("gateway.rungs")}
            assert rungs <= {"gateway.rungs.base"}, (m, rungs)
    # the factory is the one place a rung is picked (out of the base module)
    pickers = {m for m in MODULES if {"gateway.rungs.py", "gateway.rungs.rs_core"} <= set(GRAPH[m])}
    assert pickers == {"gateway.rungs.factory"}


def test_every_module_imports_fresh_on_its_own():
    """Each module first, in a fresh interpreter: an order-dependent circle would fail here
    (the extension stays loaded: a PyO3 module initialises once per process)."""
    script = (
        "import importlib, sys\n"
        "import gateway._native\n"
        "bad = []\n"
        "for m in sys.argv[1:]:\n"
        "    for k in [k for k in sys.modules if k.startswith('gateway') and k != 'gateway._native']:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{m}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    mods = [m for m in MODULES if m != "gateway"]
    r = subprocess.run(
        [sys.executable, "-c", script, *mods], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
