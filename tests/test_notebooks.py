"""Every demo notebook runs top to bottom on a real kernel (nbclient), and each is committed executed,
with outputs made from its current code (``python -m sibyl_nb.notebook.build`` remakes them).

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


def test_the_demo_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert names[:6] == [
        "01_quickstart",
        "02_sessions",
        "03_context_strategies",
        "04_graphs_and_orchestration",
        "05_complete_workflows",
        "06_reproducibility",
    ]
    assert "07_magic_tour" in names and "08_human_in_the_loop" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_the_public_pipeline_api(path):
    """Demo notebooks teach: a pipeline a cell defined is reached through ``get_pipeline``, never the
    magic's internals (``get_magic(...)``, its ``.pipelines[...]`` dict)."""
    book = nbformat.read(path, as_version=4)
    internal = [
        (i, needle)
        for i, cell in enumerate(book.cells)
        for needle in ("get_magic(", ".pipelines[")
        if needle in cell.source
    ]
    assert internal == [], f"{path.name}: (cell index, internal API) {internal}; use get_pipeline(name)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_were_made_from_the_current_code(path):
    """The stamp (code cells' SHA-256 + package version) written when the outputs were made still matches."""
    from sibyl_nb.notebook.build import expected_stamp, stamp_of

    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    fix = f"run `python -m sibyl_nb.notebook.build {path.stem}` and commit the notebook"
    assert stamp_of(book) == expected_stamp(book), f"{path.name}: outputs are older than the code: {fix}"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name} is not fully executed: {fix}"
    assert "widgets" not in book.metadata, f"{path.name} carries saved widget state"
    _check_outputs(path, book)


def _check_outputs(path: Path, book) -> None:
    """Failing demo cells fail in one line; every other cell succeeds; runs are static HTML."""
    for i, cell in enumerate(book.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        tags = cell.metadata.get("tags", [])
        if "raises-exception" in tags or "shows-traceback" in tags:
            assert len(errors) == 1, f"{path.name} cell {i} should show one error"
            tb = errors[0].traceback
            if "full-traceback" in tags or "shows-traceback" in tags:
                # the technique's own traceback, the engine's frames hidden
                assert len(tb) > 3 and "The technique's traceback" in tb[1], tb
            else:
                assert len(tb) == 1 and errors[0].ename.endswith("Error"), tb
        else:
            assert not errors, f"{path.name} cell {i} failed: {errors}"
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    runs = [o for o in outputs if "sibyl-run" in o.get("data", {}).get("text/html", "")]
    assert runs, f"{path.name} shows no run view"
    for o in runs:  # static HTML only: nothing to load, no script
        assert "<script" not in o["data"]["text/html"]


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
    _check_outputs(path, book)
    assert elapsed < 60, f"{path.name} took {elapsed:.1f} s"


def test_binder_installs_the_package():
    """repo2docker ignores pyproject.toml when binder/ exists: binder/ must install sibyl_nb itself."""
    binder = NOTEBOOKS[0].parent.parent / "binder"
    post = binder / "postBuild"
    assert post.exists() and post.stat().st_mode & 0o111, "binder/postBuild must be executable"
    assert "pip install" in post.read_text() and "-e " in post.read_text()
    reqs = (binder / "requirements.txt").read_text()
    assert "jupyterlab" in reqs
