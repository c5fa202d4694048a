"""The shape of the house (DESIGN.md): imports go one way, no cycles, no peers, small files and functions.

Every module of ``bcos_clip`` is parsed with ``ast``; imports inside functions (lazy imports) and
``importlib.import_module`` calls with a literal or f-string name count like top-level ones. The layers,
bottom to top::

    runtime -> nn -> bcosify -> {models, data} -> {train, evaluation, explain} -> apps -> cli

A module may import its own package and any package below its own. Packages on the same level are peers
and never import each other; nothing imports ``cli``. The top-level ``bcos_clip`` module (the public
API, lazy) sits just below ``apps``: only apps and cli may import names from it (subpackages are
imported by their own names: ``from bcos_clip import nn`` is an import of ``bcos_clip.nn``).
"""
from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bcos_clip"
TOP = "bcos_clip"
LEVELS: Dict[str, float] = {
    "runtime": 0, "nn": 1, "bcosify": 2, "models": 3, "data": 3,
    "train": 4, "evaluation": 4, "explain": 4, TOP: 4.5, "apps": 5, "cli": 6,
}
# Third-party model code stays behind models/ and bcosify/ (DESIGN.md).
MODEL_LIBRARIES = ("open_clip", "transformers")
MODEL_LIBRARY_PACKAGES = ("models", "bcosify")
# What the bottom two layers may import besides the standard library and their own package.
BOTTOM_THIRD_PARTY = {"runtime": ("torch", "yaml"), "nn": ("torch", "triton")}
# One of each: these libraries are read in one module only (cli/errors names yaml's exception class).
SINGLE_HOMES = {"yaml": ("bcos_clip.runtime.yaml_io", "bcos_clip.cli.errors"),
                "importlib.resources": ("bcos_clip.runtime.resources",)}
# One spelling for identifiers: American (as torch, open_clip and CLIP_benchmark write them). Strings, such
# as the "colour" view name or the --no-colour alias, and prose are not identifiers.
BRITISH = ("colour", "normalis", "grey", "centre", "behaviour", "initialis", "optimis", "summaris", "serialis",
           "visualis", "favour", "neighbour", "licence", "catalogue")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Import:
    """One import statement: the importing module, the bcos_clip module it names, where."""

    source: str
    target: str
    line: int

    def where(self) -> str:
        return f"{self.source} (line {self.line}) imports {self.target}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = (root.name,) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = ROOT) -> Dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, modules: Dict[str, Path]) -> str:
    """The longest prefix of a dotted name that is a module of the tree (``a.b.Class`` -> ``a.b``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return name


def _absolute(node: ast.ImportFrom, source: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _literal_prefix(arg: ast.expr) -> Optional[str]:
    """The module name of ``import_module("x.y")`` or the literal head of ``import_module(f"x.{n}")``."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return str(arg.values[0].value).rstrip(".")
    return None


def raw_imports(path: Path, source: str) -> Iterator[Tuple[str, int]]:
    """(dotted name, line) of every import in the file, lazy ones included; ``from a import b``
    yields ``a.b`` (resolved to ``a`` later when ``b`` is not a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, source, is_package)
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == \
                "import_module" and node.args:
            name = _literal_prefix(node.args[0])
            if name:
                yield name, node.lineno


def internal_imports(modules: Dict[str, Path]) -> List[Import]:
    out = []
    for source, path in modules.items():
        for name, line in raw_imports(path, source):
            if name == TOP or name.startswith(TOP + "."):
                target = _resolve(name, modules)
                if target != source:
                    out.append(Import(source, target, line))
    return out


def package_of(module: str) -> str:
    """``bcos_clip.apps.demo.run`` -> ``apps``; the top-level module -> ``bcos_clip``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else TOP


def layer_problems(imports: List[Import]) -> List[str]:
    problems = []
    for imp in imports:
        src, dst = package_of(imp.source), package_of(imp.target)
        if src == dst:
            continue
        if src not in LEVELS or dst not in LEVELS:
            problems.append(f"{imp.where()}: package {src if src not in LEVELS else dst!r} has no layer")
        elif LEVELS[dst] == LEVELS[src]:
            problems.append(f"{imp.where()}: {src} and {dst} are peers and must not import each other")
        elif LEVELS[dst] > LEVELS[src]:
            problems.append(f"{imp.where()}: against the direction ({src} is below {dst})")
    return problems


def cycles(imports: List[Import]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: Dict[str, Set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

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
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def third_party_problems(modules: Dict[str, Path]) -> List[str]:
    problems = []
    stdlib = set(sys.stdlib_module_names)
    for source, path in modules.items():
        package = package_of(source)
        for name, line in raw_imports(path, source):
            head = name.split(".")[0]
            for lib, homes in SINGLE_HOMES.items():
                if (name == lib or name.startswith(lib + ".")) and source not in homes:
                    problems.append(f"{source} (line {line}) imports {lib}: only {', '.join(homes)} may")
            if head in (TOP, "__future__") or head in stdlib:
                continue
            if head in MODEL_LIBRARIES and package not in MODEL_LIBRARY_PACKAGES:
                problems.append(f"{source} (line {line}) imports {head}: only "
                                f"{' and '.join(MODEL_LIBRARY_PACKAGES)} may")
            if package in BOTTOM_THIRD_PARTY and head not in BOTTOM_THIRD_PARTY[package]:
                problems.append(f"{source} (line {line}) imports {head}: {package} may import only "
                                f"{', '.join(BOTTOM_THIRD_PARTY[package])} and the standard library")
    return problems


def _parsed(path: Path) -> Tuple[str, ast.Module]:
    text = path.read_text(encoding="utf-8")
    return text, ast.parse(text, str(path))


def _nodes(modules: Dict[str, Path], kinds: Tuple[type, ...]) -> Iterator[Tuple[str, ast.AST]]:
    """(module, node) for every node of the given kinds in every module."""
    for source, path in modules.items():
        yield from ((source, node) for node in ast.walk(_parsed(path)[1]) if isinstance(node, kinds))


def size_problems(modules: Dict[str, Path]) -> List[str]:
    lengths = {source: len(_parsed(path)[0].splitlines()) for source, path in modules.items()}
    problems = [f"{source}: {n} lines (at most {MAX_FILE_LINES})" for source, n in lengths.items()
                if n > MAX_FILE_LINES]
    return problems + [f"{source}.{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines "
                       f"(at most {MAX_FUNCTION_LINES})"
                       for source, node in _nodes(modules, (ast.FunctionDef, ast.AsyncFunctionDef))
                       if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def private_imports(modules: Dict[str, Path]) -> List[str]:
    """``from bcos_clip.x import _name`` in another module: a private name used across modules."""
    return [f"{source} (line {node.lineno}) imports the private {a.name} from {node.module}"
            for source, node in _nodes(modules, (ast.ImportFrom,))
            if node.level or (node.module or "").startswith(TOP)
            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]


def british_identifiers(modules: Dict[str, Path]) -> List[str]:
    problems = []
    for source, path in modules.items():
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline):
            if tok.type == tokenize.NAME and any(b in tok.string.lower() for b in BRITISH):
                problems.append(f"{source} (line {tok.start[0]}): {tok.string} (identifiers are spelled American)")
    return problems


@pytest.fixture(scope="module")
def modules() -> Dict[str, Path]:
    return all_modules()


@pytest.fixture(scope="module")
def imports(modules) -> List[Import]:
    return internal_imports(modules)


def test_every_package_has_a_layer(modules):
    assert {package_of(m) for m in modules} <= set(LEVELS)


def test_imports_go_one_way_without_peers(imports):
    assert not layer_problems(imports), "\n".join(layer_problems(imports))


def test_no_import_cycles(imports):
    found = cycles(imports)
    assert not found, "\n".join(f"import cycle among {len(c)} modules: {', '.join(c)}" for c in found)


@pytest.mark.parametrize("check", [third_party_problems, private_imports, british_identifiers, size_problems],
                         ids=["model libraries and bottom-layer imports", "private names stay in their module",
                              "one spelling for identifiers", "small files and functions"])
def test_every_module(modules, check):
    problems = check(modules)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- the checks themselves


def _tree(tmp_path: Path, files: Dict[str, str]) -> Dict[str, Path]:
    root = tmp_path / TOP
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return all_modules(root)


def test_checks_catch_wrong_direction_peers_lazy_imports_and_cycles(tmp_path):
    mods = _tree(tmp_path, {
        "nn/__init__.py": "", "nn/layer.py": "def f():\n    from bcos_clip.models import thing\n",
        "models/__init__.py": "", "models/thing.py": "from bcos_clip.nn import layer\n",
        "train/__init__.py": "", "train/loop.py": "from bcos_clip.explain import core\n",
        "explain/__init__.py": "", "explain/core.py": "import importlib\nimportlib.import_module('bcos_clip.cli')\n",
        "explain/other.py": "from bcos_clip.explain.core import _helper\ncolour = 'colour'\n",
        "cli/__init__.py": "",
    })
    problems = "\n".join(layer_problems(internal_imports(mods)))
    assert "bcos_clip.nn.layer (line 2) imports bcos_clip.models.thing: against the direction" in problems
    assert "train and explain are peers" in problems
    assert "bcos_clip.explain.core (line 2) imports bcos_clip.cli: against the direction" in problems
    assert cycles(internal_imports(mods)) == [["bcos_clip.models.thing", "bcos_clip.nn.layer"]]
    assert british_identifiers(mods) == ["bcos_clip.explain.other (line 2): colour (identifiers are spelled "
                                         "American)"]
    assert private_imports(mods) == ["bcos_clip.explain.other (line 1) imports the private _helper from "
                                     "bcos_clip.explain.core"]


def test_checks_catch_long_files_and_functions_and_model_libraries(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    mods = _tree(tmp_path, {"train/__init__.py": "import open_clip\n", "train/long.py": "def f():\n" + body,
                            "runtime/__init__.py": "import numpy\n", "data/__init__.py": "\n" * 401,
                            "evaluation/__init__.py": "def f():\n    import yaml\n"})
    sizes = "\n".join(size_problems(mods))
    assert f"bcos_clip.train.long.f (line 1): {MAX_FUNCTION_LINES + 1} lines" in sizes
    assert "bcos_clip.data: 401 lines" in sizes
    libs = "\n".join(third_party_problems(mods))
    assert "bcos_clip.train (line 1) imports open_clip" in libs
    assert "bcos_clip.runtime (line 1) imports numpy" in libs
    assert "bcos_clip.evaluation (line 2) imports yaml: only bcos_clip.runtime.yaml_io" in libs


def test_light_imports_stay_light():
    """``import bcos_clip.nn`` (and the top-level package) load neither open_clip nor models nor explain."""
    code = ("import sys, bcos_clip, bcos_clip.nn, bcos_clip.runtime.device; "
            "heavy = [m for m in ('open_clip', 'transformers', 'bcos_clip.models', 'bcos_clip.explain', "
            "'bcos_clip.bcosify', 'bcos_clip.train') if m in sys.modules]; "
            "print(heavy); assert not heavy, heavy; "
            "import bcos_clip.explain.core, bcos_clip.bcosify.spec; "
            "from bcos_clip import load_clip, explain, bcosify, explanation_mode, Explanation; "
            "assert callable(explain) and callable(bcosify) and bcos_clip.explain is explain, explain")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
