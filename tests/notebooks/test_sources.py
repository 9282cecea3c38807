"""The notebooks are source files: each study is a jupytext py:percent script
(notebooks/<name>.py) paired with the .ipynb papermill executes. The two must hold the same
cells -- `jupytext --sync notebooks/<name>.py` puts them back in step -- and the script must
be ordinary, compilable Python with a literal-only parameters cell."""

from __future__ import annotations

import ast

import jupytext
import nbformat
import pytest

from harness import notebooks as nbs

DIR = nbs.NOTEBOOK_DIR


def _cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_every_notebook_has_a_source_and_no_generator_is_left():
    assert not (DIR / "_build.py").exists()
    for name in nbs.NOTEBOOKS:
        assert (DIR / f"{name}.py").is_file(), f"{name}: no jupytext source"
        assert (DIR / f"{name}.ipynb").is_file(), (
            f"{name}: no paired notebook (run `jupytext --sync notebooks/{name}.py`)"
        )
    stray = {p.stem for p in DIR.glob("[0-9][0-9]_*.ipynb")} - {p.stem for p in DIR.glob("[0-9][0-9]_*.py")}
    assert not stray, f"notebooks without a source: {sorted(stray)}"


@pytest.mark.parametrize("name", nbs.NOTEBOOKS)
def test_source_and_notebook_hold_the_same_cells(name):
    src = jupytext.read(DIR / f"{name}.py")
    ipynb = nbformat.read(DIR / f"{name}.ipynb", as_version=4)
    assert _cells(src) == _cells(ipynb), (
        f"notebooks/{name}.py and .ipynb differ: run `.venv/bin/jupytext --sync notebooks/{name}.py`"
    )
    assert src.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    assert all(not c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), (
        f"{name}.ipynb is committed with outputs"
    )


@pytest.mark.parametrize("name", nbs.NOTEBOOKS)
def test_source_is_python_with_literal_parameters(name):
    text = (DIR / f"{name}.py").read_text()
    ast.parse(text, filename=f"{name}.py")  # the magics are comments in py:percent
    nb = jupytext.reads(text, fmt="py:percent")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1, f"{name}: exactly one parameters cell"
    for node in ast.parse(params[0].source).body:
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)  # papermill reads literals only
    names = {t.id for node in ast.parse(params[0].source).body for t in node.targets}
    assert {"profile", "run_dir"} <= names


def test_a_difference_is_caught(tmp_path):
    """The comparison above is not vacuous: an edit to one side shows."""
    name = nbs.NOTEBOOKS[0]
    src = jupytext.read(DIR / f"{name}.py")
    ipynb = nbformat.read(DIR / f"{name}.ipynb", as_version=4)
    ipynb.cells[-1].source += "\nprint('edited in the notebook only')"
    assert _cells(src) != _cells(ipynb)
