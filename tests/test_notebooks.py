"""Every demo notebook runs top to bottom on a real kernel (nbclient), and none is committed with outputs.

The kernel is the ``python3`` kernelspec; jupyter_client starts a spec whose command is ``python``
with *this* interpreter (``sys.executable``), so the notebooks run against the venv under test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


def _kernel_name() -> str:
    """The python3 kernelspec, checked to launch this interpreter (not some other python on PATH)."""
    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:  # pragma: no cover - ipykernel normally ships it
        pytest.fail(f"no '{KERNEL}' kernelspec: run `{sys.executable} -m ipykernel install --sys-prefix`")
    exe = spec.argv[0]
    if (
        exe not in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}")
        and Path(exe).resolve() != Path(sys.executable).resolve()
    ):
        pytest.fail(f"kernelspec '{KERNEL}' runs {exe}, not {sys.executable}")
    return KERNEL


def test_the_demo_notebooks_are_these():
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01_quickstart",
        "02_sessions",
        "03_context_strategies",
        "04_graphs_and_orchestration",
        "05_complete_workflows",
        "06_reproducibility",
        "08_human_in_the_loop",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for i, cell in enumerate(book.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in book.metadata, f"{path.name} carries saved widget state"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book,
        kernel_name=_kernel_name(),
        timeout=120,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError on any error not tagged raises-exception
    elapsed = time.perf_counter() - t0
    for i, cell in enumerate(book.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if "raises-exception" in cell.metadata.get("tags", []):
            # a demo of a bad cell: in a real kernel it must fail, and show exactly one line
            assert len(errors) == 1, f"{path.name} cell {i} should have failed"
            assert len(errors[0].traceback) == 1 and errors[0].ename.endswith("Error"), errors[0].traceback
        else:
            assert not errors, f"{path.name} cell {i} failed: {errors}"
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    runs = [o for o in outputs if "sibyl-run" in o.get("data", {}).get("text/html", "")]
    assert runs, f"{path.name} shows no run view"
    for o in runs:  # static HTML only: nothing to load, no script
        assert "<script" not in o["data"]["text/html"]
    assert elapsed < 60, f"{path.name} took {elapsed:.1f} s"


def test_binder_installs_the_package():
    """repo2docker ignores pyproject.toml when binder/ exists: binder/ must install sibyl_nb itself."""
    binder = NOTEBOOKS[0].parent.parent / "binder"
    post = binder / "postBuild"
    assert post.exists() and post.stat().st_mode & 0o111, "binder/postBuild must be executable"
    assert "pip install" in post.read_text() and "-e " in post.read_text()
    reqs = (binder / "requirements.txt").read_text()
    assert "jupyterlab" in reqs
