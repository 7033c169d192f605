"""The rings of docs/design.md ("Architecture and rings") hold: core/, io/, stages/ never import napari, Qt or magicgui.

Two independent checks: import-linter's ``lint-imports`` against the contracts in
``pyproject.toml`` ([tool.importlinter]), and an AST scan of every module of the inner
rings (it also sees imports inside functions; dynamic ``importlib`` imports are out of
scope for both). Both are shown to fail on a planted violation in a temporary copy of
the tree.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "napari_cryohet"
INNER = ("core", "io", "stages")
GUI = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "pyqtgraph"}
OUTER = {"napari_cryohet.plugin", "napari_cryohet.cli", "napari_cryohet.api", "napari_cryohet.walkthrough_steps"}


def lint_imports_exe() -> str:
    exe = Path(sys.executable).parent / "lint-imports"
    if exe.exists():
        return str(exe)
    found = shutil.which("lint-imports")
    if found is None:
        pytest.fail("import-linter's lint-imports is not installed (pip install import-linter)")
    return found


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute name of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")[: -node.level]
    return ".".join([*parts, node.module] if node.module else parts)


def forbidden_imports(package_dir: Path) -> list[str]:
    """``file:line: name`` for every GUI or outer-ring import in core/io/stages."""
    bad = []
    for ring in INNER:
        for path in sorted((package_dir / ring).rglob("*.py")):
            module = "napari_cryohet." + ".".join(path.relative_to(package_dir).with_suffix("").parts)
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = _resolve(module, node)
                    names = [base, *(f"{base}.{a.name}" for a in node.names)]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    outer = any(name == o or name.startswith(o + ".") for o in OUTER)
                    core_up = ring == "core" and name.startswith("napari_cryohet.") and \
                        name.split(".")[1] in {"io", "stages", "plugin", "cli"}
                    if top in GUI or outer or core_up:
                        bad.append(f"{path.relative_to(package_dir)}:{node.lineno}: {name}")
    return bad


def run_lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    return subprocess.run([lint_imports_exe(), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_contracts_cover_the_inner_rings():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "napari_cryohet"
    gui = [c for c in config["contracts"] if c["type"] == "forbidden"
           and set(INNER) <= {m.split(".")[-1] for m in c["source_modules"]}]
    assert gui, "no forbidden contract covers core, io and stages"
    assert {"napari", "magicgui", "PyQt6", "qtpy"} <= set(gui[0]["forbidden_modules"])


def test_lint_imports_passes_on_the_tree():
    result = run_lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and "0 broken" in result.stdout


def test_ast_scan_finds_no_gui_import_in_inner_rings():
    assert forbidden_imports(SRC) == []


def test_both_checks_catch_a_planted_violation(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    (copy / "src" / "napari_cryohet" / "io" / "_planted.py").write_text(
        '"""A violation planted by the test."""\n\n\ndef f():\n    from magicgui import magicgui\n\n'
        "    return magicgui\n"
    )
    (copy / "src" / "napari_cryohet" / "core" / "_planted.py").write_text("import napari\n")
    assert sorted(forbidden_imports(copy / "src" / "napari_cryohet")) == [
        "core/_planted.py:1: napari", "io/_planted.py:5: magicgui", "io/_planted.py:5: magicgui.magicgui",
    ]
    result = run_lint_imports(copy)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "napari_cryohet.core._planted" in result.stdout
