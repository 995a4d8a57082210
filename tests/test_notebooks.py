"""Run every notebook in notebooks/ headlessly, top to bottom on a fresh kernel, as a reader would.

Each notebook runs with nbclient in its own folder, with ``SERESNET_DATA`` pointing at an empty folder so that only
what the package ships (checkpoints and the 1,000-image sample) is available, under a time limit per notebook
(``SERESNET_NOTEBOOK_TIMEOUT`` seconds, default 300). Any cell error fails the test. Execution times are printed
and written to ``test-output/notebook-times.json``.

Cheap checks on the stored files run first (as git stores them, so a notebook a user ran and JupyterLab autosaved
does not fail them): outputs cleared, a title, no function defined in two notebooks.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
TIMEOUT = int(os.environ.get("SERESNET_NOTEBOOK_TIMEOUT", "300"))
TIMES_FILE = REPO / "test-output" / "notebook-times.json"


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3, f"expected the notebook suite in {NOTEBOOK_DIR}, found {NOTEBOOKS}"


def _stored_version(path: Path) -> nbformat.NotebookNode:
    """The notebook as git stores it (the index: what a commit would hold), else the file itself.

    Opening the notebooks in JupyterLab autosaves their outputs into the working copy; that must not fail the
    tests, while committing outputs still does."""
    import subprocess

    rel = path.relative_to(REPO).as_posix()
    try:
        shown = subprocess.run(["git", "-C", str(REPO), "show", f":{rel}"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        shown = None
    if shown is not None and shown.returncode == 0:
        return nbformat.reads(shown.stdout, as_version=4)
    return nbformat.read(path, as_version=4)  # not in a git checkout, or a new notebook not yet added


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = _stored_version(path)
    nbformat.validate(nb)
    for i, cell in enumerate(_code_cells(nb)):
        assert not cell.outputs, f"{path.name}: code cell {i} has stored outputs; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: code cell {i} has an execution count"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), \
        f"{path.name} must start with a Markdown title"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


def test_clean_check_reads_what_git_stores_not_the_autosaved_copy(tmp_path: Path, monkeypatch) -> None:
    import subprocess

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    path = tmp_path / "notebooks" / "x.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "notebooks/x.ipynb"], check=True)
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nbformat.write(nb, path)  # what JupyterLab's autosave does after a user runs the cell
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert not _stored_version(path).cells[0].outputs
    subprocess.run(["git", "-C", str(tmp_path), "add", "notebooks/x.ipynb"], check=True)  # about to commit it
    assert _stored_version(path).cells[0].outputs


def test_no_function_is_defined_in_two_notebooks() -> None:
    """Logic shared between notebooks belongs in the seresnet package, not copied from one notebook to another."""
    where: dict[str, list[str]] = {}
    for path in NOTEBOOKS:
        source = "\n".join(c.source for c in _code_cells(nbformat.read(path, as_version=4)))
        for name in set(re.findall(r"^\s*(?:def|class)\s+(\w+)", source, flags=re.M)):
            where.setdefault(name, []).append(path.name)
    shared = {k: v for k, v in where.items() if len(v) > 1}
    assert not shared, f"defined in several notebooks (move them into the package): {shared}"


def _record_time(name: str, seconds: float) -> None:
    TIMES_FILE.parent.mkdir(exist_ok=True)
    try:
        times = json.loads(TIMES_FILE.read_text())
    except (OSError, ValueError):
        times = {}
    times[name] = round(seconds, 1)
    TIMES_FILE.write_text(json.dumps(times, indent=1, sort_keys=True))


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT + 60)  # nbclient enforces TIMEOUT itself; this is the backstop
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    # No CIFAR-10: the notebooks must run on what the package ships. The kernel inherits this environment.
    monkeypatch.setenv("SERESNET_DATA", str(tmp_path / "no-cifar10-here"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            if time.perf_counter() - start > TIMEOUT:
                pytest.fail(f"{path.name} ran over its {TIMEOUT} s limit (at cell {index})")
    elapsed = time.perf_counter() - start
    print(f"\n{path.name}: executed in {elapsed:.1f} s")
    _record_time(path.name, elapsed)

    for i, cell in enumerate(_code_cells(nb)):
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name} cell {i}: {out.get('ename')}: {out.get('evalue')}"
            data = out.get("data", {})
            text = data.get("text/plain", "")
            # a figure that shows up as text means the notebook lacks `%matplotlib inline` before plotting
            assert not (text.startswith("<Figure size") and "image/png" not in data), \
                f"{path.name} cell {i}: a figure was displayed as text, not as an image"
