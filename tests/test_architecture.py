"""docs/architecture.md is the map of tfod's layers; this test keeps the code true to it.

Every import in ``tfod/`` (lazy ones inside functions too) must be one the map's "may import"
column allows, with its one documented exception (the trainer's evaluator scores with
``tfod.scoring.metric``). Every module and package of ``tfod/`` is named in the map.
"""
import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAP = REPO / "docs" / "architecture.md"
BASE = {"errors", "stack", "compat", "doctor", "boxes", "fields", "labelrows", "detections",
        "runfolder", "cli", "progress"}
BELOW = {"base": set(), "data": {"base"}, "config": {"base", "data"},
         "train": {"base", "data", "config"}, "scoring": {"base", "data"},
         "infer": {"base", "data", "config", "train", "scoring"},
         "classify": {"base", "data", "config", "train", "scoring"},
         "demo": {"base", "data", "config", "train", "scoring", "infer", "classify"}}  # the map
EXCEPTIONS = {("train", "tfod.scoring.metric")}  # the evaluator's competition metric


def layer_of(module: str) -> str:
    """The layer of a ``tfod...`` module name."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    top = parts[1]
    if top in ("demo", "demo_report"):
        return "demo"
    if top not in BELOW:
        raise AssertionError(f"{module}: in no layer of {MAP.name}; add it to the map")
    return top


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every tfod import of a module, lazy ones included; for
    ``from a import b`` the module ``a.b`` when that is a module, else ``a``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (REPO / Path(*candidate.split("."))).with_suffix(".py").exists() or \
                    (REPO / Path(*candidate.split("."))).is_dir()
                found.append((node.lineno, candidate if is_module else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "tfod"]


def allowed(importer: str, target: str, name: str) -> bool:
    if importer == target or (importer, name) in EXCEPTIONS or any(
            name.startswith(module + ".") for layer, module in EXCEPTIONS if layer == importer):
        return True
    return target in BELOW[importer]


SOURCES = sorted((REPO / "tfod").rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_go_down_the_layers(path):
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    importer = layer_of(name)
    broken = [f"{path.relative_to(REPO)}:{line}: {importer} imports {target} "
              f"({layer_of(target)})"
              for line, target in imported(ast.parse(path.read_text()), package)
              if not allowed(importer, layer_of(target), target)]
    assert not broken, "\n".join(broken)


def test_the_map_names_every_module_and_package():
    text = MAP.read_text()
    named = set(re.findall(r"`(tfod/[\w/]+(?:\.py)?)`", text))
    tops = {f"tfod/{path.name}" for path in (REPO / "tfod").glob("*.py")
            if path.name != "__init__.py"}
    tops |= {f"tfod/{path.name}/" for path in (REPO / "tfod").iterdir()
             if path.is_dir() and (path / "__init__.py").exists()}
    missing = sorted(top for top in tops if top not in named and top.rstrip("/") not in named)
    assert not missing, f"{MAP.name} does not name {missing}"


def test_an_upward_import_is_caught(tmp_path):
    """The rule itself: a data module importing the ensemble would break the layering."""
    tree = ast.parse("def f():\n    from tfod.infer import ensemble\n")
    (line, target), = imported(tree, "tfod.data")
    assert not allowed("data", layer_of(target), target) and line == 2
