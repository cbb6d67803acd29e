"""The package's layout rules (CONTRIBUTING.md): small modules, imports at the top and only downward (no cycle),
and one registry per kind of name that every implementation agrees with."""

import ast
import re
from pathlib import Path

import pytest

from jepa_lite import data, registry
from jepa_lite.core import build, collate, methods
from jepa_lite.data import nuisance

PACKAGE = Path(__file__).resolve().parents[1] / "jepa_lite"
MAX_LINES = 420
# imports allowed inside a function: optional dependencies, and torchvision's downloader, which only a
# Fashion-MNIST download without Debian's package needs
LAZY = {"ipywidgets", "torchvision.datasets"}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def package_imports(name: str, path: Path) -> tuple[set[str], list[str]]:
    """(package modules imported at module level, imports found inside functions)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    top, inner = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                top |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jepa_lite"):
                top.add(node.module)
        else:
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            inner += [n for n in names if n]
    return top, inner


def test_no_module_is_longer_than_the_limit():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


MAX_FUNCTION_LINES = 60  # nanoGPT's longest function is about 60 lines; argument parsers are one long list


def long_functions(paths) -> dict[str, int]:
    """'file:function' -> lines (signature and docstring included) for every function over the limit."""
    found = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith(
                "parse_"
            ):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[f"{path.name}:{node.name}"] = lines
    return found


def test_no_function_is_longer_than_the_limit():
    scripts = sorted((PACKAGE.parent / "scripts").rglob("*.py"))
    assert long_functions([*modules().values(), *scripts]) == {}


def test_the_function_length_check_counts_signature_docstring_and_body(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    (tmp_path / "a.py").write_text(f'def f(\n    a,\n):\n    """doc"""\n{body}\n')
    (tmp_path / "b.py").write_text(f'def parse_args():\n    """doc"""\n{body}\n{body}\n')
    assert long_functions([tmp_path / "a.py", tmp_path / "b.py"]) == {"a.py:f": 62}


MAX_POSITIONAL = 4  # beyond this, a reader cannot tell which argument is which without the signature
TENSOR_SHAPES = {"reshape", "permute", "view", "expand", "repeat"}  # dimensions are positional by nature


def long_positional_calls(paths) -> list[str]:
    """'file:line name' of every call that passes more than MAX_POSITIONAL arguments by position."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and len(node.args) > MAX_POSITIONAL:
                name = ast.unparse(node.func)
                if name.split(".")[-1] not in TENSOR_SHAPES:
                    found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_calls_with_more_than_four_arguments_pass_them_by_keyword():
    scripts = sorted((PACKAGE.parent / "scripts").rglob("*.py"))
    assert long_positional_calls([*modules().values(), *scripts]) == []


def test_the_positional_check_counts_positions_not_keywords(tmp_path):
    (tmp_path / "a.py").write_text("f(1, 2, 3, 4, 5)\nf(1, 2, 3, 4, e=5)\nx.reshape(1, 2, 3, 4, 5)\n")
    assert long_positional_calls([tmp_path / "a.py"]) == ["a.py:1 f"]


def test_imports_sit_at_the_top_except_optional_ones():
    inner = {n: [i for i in package_imports(n, p)[1] if i not in LAZY] for n, p in modules().items()}
    assert {n: i for n, i in inner.items() if i} == {}


def test_the_package_has_no_import_cycle():
    mods = modules()
    graph = {n: {t for t in package_imports(n, p)[0] if t in mods and t != n} for n, p in mods.items()}
    # a package's __init__ may re-export its own submodules; a submodule importing its package's __init__
    # would be a cycle and is kept in the graph
    for n in graph:
        graph[n] -= {t for t in graph[n] if t.startswith(n + ".")}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t) :] + [n, t]))
            if t not in state:
                visit(t, stack + [n])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])


# The layers, bottom up: each imports only from itself and the layers listed for it. The core (one training
# step and its probes) imports nothing from the cluster machinery, the lab or the drawings.
LAYERS = {
    "registry": set(),
    "data": {"registry"},
    "core": {"registry", "data"},
    "interop": {"registry", "data", "core"},
    "cluster": {"registry", "data", "core", "interop"},
    "lab": {"registry", "data", "core", "cluster"},
    "drawing": {"registry", "data", "core"},
}


def layer_of(module: str) -> str | None:
    """'jepa_lite.core.train' -> 'core'; viz/, widgets/ and diagrams are the drawing layer."""
    part = module.split(".")[1] if "." in module else None
    return "drawing" if part in ("viz", "widgets", "diagrams") else part


def layer_violations(mods: dict[str, Path]) -> list[str]:
    found = []
    for n, p in mods.items():
        own = layer_of(n)
        for t in package_imports(n, p)[0]:
            if t in mods and layer_of(t) not in {own, *LAYERS.get(own, ())}:
                found.append(f"{n} ({own}) imports {t} ({layer_of(t)})")
    return found


def test_every_module_sits_in_a_layer():
    assert [n for n in modules() if n != "jepa_lite" and layer_of(n) not in LAYERS] == []


def test_each_layer_imports_only_from_the_layers_below_it():
    assert layer_violations(modules()) == []


def test_the_layer_check_sees_the_core_importing_the_cluster_layer(tmp_path):
    """The check is not vacuous: a core module importing a checkpoint function is reported."""
    (tmp_path / "train.py").write_text("from ..cluster.checkpoint import save_checkpoint\n")
    mods = {**modules(), "jepa_lite.core.train": tmp_path / "train.py"}
    assert layer_violations(mods) == ["jepa_lite.core.train (core) imports jepa_lite.cluster.checkpoint (cluster)"]


def test_only_the_drawing_modules_import_viz():
    mods = modules()
    users = {
        n for n, p in mods.items() if any(t.startswith("jepa_lite.viz") for t in package_imports(n, p)[0])
    }
    assert {u for u in users if not u.startswith(("jepa_lite.viz", "jepa_lite.widgets"))} <= {
        "jepa_lite.diagrams"
    }


def test_the_import_graph_is_read_from_relative_imports():
    """The cycle check above is not vacuous: train's relative imports are edges of its graph."""
    mods = modules()
    top, _ = package_imports("jepa_lite.core.train", mods["jepa_lite.core.train"])
    assert {"jepa_lite.core.build", "jepa_lite.core.batches", "jepa_lite.core.steplog"} <= top


def test_each_registry_names_what_its_implementation_provides():
    assert tuple(methods.METHODS) == registry.METHODS == tuple(build.METHOD_BUILDERS)
    assert set(registry.METHOD_PRESETS) == set(registry.METHODS) == set(registry.METHOD_NAMES)
    assert tuple(collate.COLLATORS) == registry.MASK_STRATEGIES
    assert tuple(data._INFO) == registry.DATASETS == tuple(registry.TRAIN_SIZES)
    assert nuisance.KINDS == registry.NUISANCE_KINDS


def orphaned_words(source: str) -> list[tuple[int, str]]:
    """(line, word) of every docstring line that holds one word and ends a paragraph the line above left
    open (no full stop or colon): the mark of a line-wrapping pass that pushed a last word onto its own line,
    e.g. "[B, D] -> [B," followed by "out].". Lines inside indented blocks (examples, lists) are not text."""
    tree, lines, found = ast.parse(source), source.splitlines(), []
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not (isinstance(body, list) and body and isinstance(body[0], ast.Expr)):
            continue
        doc = body[0].value
        if not (isinstance(doc, ast.Constant) and isinstance(doc.value, str)):
            continue
        first, last = doc.lineno - 1, doc.end_lineno - 1
        for i in range(first + 1, last + 1):
            word = lines[i].strip().removesuffix('"""')
            ends_paragraph = i == last or not lines[i + 1].strip()
            above = lines[i - 1].strip()
            if (
                word
                and " " not in word
                and ends_paragraph
                and above
                and not above.endswith((".", ":", '"""'))
            ):
                found.append((i + 1, word))
    return found


def test_no_docstring_ends_in_a_word_on_a_line_of_its_own():
    scripts = sorted((PACKAGE.parent / "scripts").glob("*.py"))
    found = {
        f"{p.name}:{line}": w
        for p in [*modules().values(), *scripts]
        for line, w in orphaned_words(p.read_text())
    }
    assert found == {}


def test_the_orphan_check_catches_the_damage_it_names():
    damaged = 'def f():\n    """Project: [B, D] -> [B,\n    out]."""\n'
    assert orphaned_words(damaged) == [(3, "out].")]
    assert orphaned_words('def f():\n    """Project: [B, D] -> [B, out].\n\n    Shapes:\n    out."""\n') == []


def test_every_section_header_has_code_under_it():
    """A `# ----` banner and its title are followed by code before the next banner or the end of the file."""
    empty = []
    for name, path in modules().items():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        banners = [i for i, line in enumerate(lines) if line.startswith("# ------")]
        for i in banners:
            if i + 2 >= len(lines) or lines[i + 2].startswith("# ------"):
                empty.append(f"{name}: {lines[i + 1]}")
    assert empty == []


def test_the_package_docstrings_and_the_readme_name_every_module():
    """The package docstring names every layer; each layer's docstring and the README's package map name
    each of its modules."""
    import importlib

    import jepa_lite

    readme = (PACKAGE.parent / "README.md").read_text()
    mods = [n for n in modules() if n != "jepa_lite"]
    top = sorted({n.split(".")[1] for n in mods})
    subpackages = {n.split(".")[1] for n in mods if n.count(".") == 2}
    named = lambda m: f"{m}/" if m in subpackages else m  # noqa: E731
    words = set(re.findall(r"[\w/]+", jepa_lite.__doc__))
    assert [m for m in top if named(m) not in words] == []
    missing = []
    for layer in ("data", "core", "cluster", "lab"):
        doc = set(re.findall(r"\w+", importlib.import_module(f"jepa_lite.{layer}").__doc__))
        for n in mods:
            if n.startswith(f"jepa_lite.{layer}.") and n.split(".")[2] not in doc:
                missing.append(n)
            if n.startswith(f"jepa_lite.{layer}.") and f"`{layer}/{n.split('.')[2]}.py`" not in readme:
                missing.append(f"README: {n}")
    missing += [f"README: {m}" for m in top if m not in ("data", "core", "cluster", "lab") and f"`{named(m)}" not in readme]
    assert missing == []


def test_no_test_module_imports_another():
    """Shared fixtures and helpers live in conftest.py, so each test file runs on its own."""
    found = []
    for path in sorted((PACKAGE.parent / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name} imports {n}" for n in names if n.startswith("test_")]
    assert found == []
