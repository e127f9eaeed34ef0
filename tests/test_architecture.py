"""The package's shape: folders by concern whose imports point one way, few modules at the
top, and no module or function grown into two concepts (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "charlstm"
FOLDERS = ("data", "model", "training", "infer", "export", "serve", "cli")
# what each folder must not import (a module anywhere under that folder)
FORBIDDEN = {
    "model": {"data", "training", "infer", "serve", "cli"},
    "data": {"model", "training", "infer", "serve", "cli"},
    "infer": {"training", "serve", "cli"},
    "training": {"serve", "cli"},
    "export": {"training", "infer", "serve", "cli"},
    "serve": {"cli"},
    "cli": set(),  # the command line may import every folder (serve included, to run it)
    "": {"serve", "cli"},  # the modules at the top: api, checkpoint, settings, ...
}
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def folder_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported(path: Path) -> set[str]:
    """The charlstm modules and packages `path` imports, as dotted names after
    'charlstm.' (relative imports resolved), wherever the import statement stands."""
    package = ["charlstm", *path.relative_to(PACKAGE).parts[:-1]]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name.split(".", 1)[1] for name in names
                  if name.startswith("charlstm.") and name != "charlstm"}
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_between_folders_point_one_way(path):
    if path == PACKAGE / "__main__.py":  # `python -m charlstm` is the command line
        return
    forbidden = FORBIDDEN[folder_of(path)]
    wrong = sorted(name for name in imported(path) if name.split(".")[0] in forbidden)
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {wrong}"


def test_the_walk_sees_relative_and_absolute_imports(tmp_path):
    # the check above is only as good as `imported`: it must resolve what the code writes
    folder = PACKAGE / "infer"
    probe = folder / "_probe_for_test.py"
    try:
        probe.write_text("from ..training import loop\nfrom .generate import x\n"
                         "import charlstm.model.charrnn\ndef f():\n    from ..data.vocab import V\n")
        assert imported(probe) >= {"training.loop", "infer.generate", "model.charrnn",
                                   "data.vocab"}
    finally:
        probe.unlink()


def test_the_top_level_keeps_only_what_every_part_shares():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()
            } >= set(FOLDERS)


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_maps_its_files(folder):
    doc = ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())) or ""
    files = sorted(p.name for p in (PACKAGE / folder).glob("*.py") if p.name != "__init__.py")
    missing = [name for name in files if name not in doc]
    assert not missing, f"{folder}/__init__.py does not map {missing}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_or_function_holds_two_concepts(path):
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{path.name}: {text.count(chr(10))} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # the body only: a command's option declarations in its signature do not count
            length = node.end_lineno - node.body[0].lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.name} is {length} lines"
