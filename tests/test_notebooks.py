"""The worked notebooks, executed top to bottom in a kernel on the default model (fast settings).

A failing cell fails its test. The notebooks also serve as tests of the public API: they import
nothing private (checked here).
"""

import ast
import sys
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
from execute import execute, notebooks  # noqa: E402

NOTEBOOKS = notebooks()


def test_the_six_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_uses_only_the_public_api(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            assert not any(part.startswith("_") and not part.startswith("__")
                           for name in names for part in name.split(".")), (path.name, cell.source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_carries_a_full_run(path):
    committed = nbformat.read(path, as_version=4)
    code = [c for c in committed.cells if c.cell_type == "code"]
    # the committed copy is a finished full run: every code cell ran, in order, without an error
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not any(o.output_type == "error" for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)  # figures as a full run stores them
    assert "FINDINGS" not in "".join(c.source for c in committed.cells)
    executed = execute(path, fast=True)  # raises on the first failing cell
    assert all(c.execution_count is not None for c in executed.cells if c.cell_type == "code")
