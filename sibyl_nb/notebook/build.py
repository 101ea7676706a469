"""Execute the demo notebooks and commit their outputs: ``python -m sibyl_nb.notebook.build``.

Why committed outputs: visitors read the notebooks on GitHub, in nbviewer or on Binder before they
run anything, and an unexecuted demo shows nothing. The run views are static HTML (see
:mod:`.render`), so the saved outputs show everywhere with no kernel and no network.

Why a stamp: each built notebook records, in ``metadata.sibyl_nb``, the SHA-256 of its code cells'
sources and the package version it was built with. ``tests/test_notebooks.py`` recomputes both and
fails when a notebook's code changed after its outputs were made (timings and run ids in the outputs
are volatile; the stamp is not). Rebuild one or more with ``python -m sibyl_nb.notebook.build NAME``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOKS", "source_hash", "stamp_of", "expected_stamp", "is_stale", "build", "main"]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
STAMP_KEY = "sibyl_nb"
KERNEL = "python3"


def source_hash(book: Any) -> str:
    """SHA-256 of the code cells' sources, in order (what the outputs depend on)."""
    sources = [_source(c) for c in book["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources, ensure_ascii=False).encode("utf-8")).hexdigest()


def _source(cell: Any) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _version() -> str:
    from .. import __version__

    return __version__


def expected_stamp(book: Any) -> dict[str, str]:
    return {"source_sha256": source_hash(book), "version": _version()}


def stamp_of(book: Any) -> dict[str, object] | None:
    """The stamp as saved (a hand-edited notebook may lack a key or hold a non-string)."""
    stamp = book.get("metadata", {}).get(STAMP_KEY)
    return {k: stamp.get(k) for k in ("source_sha256", "version")} if isinstance(stamp, dict) else None


def is_stale(path: Path) -> bool:
    import nbformat

    book = nbformat.read(path, as_version=4)
    return stamp_of(book) != expected_stamp(book)


def build(path: Path, *, timeout: int = 300) -> float:
    """Execute ``path`` on a fresh ``python3`` kernel (in a scratch directory) and save it stamped."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="sibyl-nb-build-") as scratch:
        env_home = os.environ.get("SIBYL_HOME")
        os.environ["SIBYL_HOME"] = str(Path(scratch) / ".sibyl")  # the kernel inherits it: no user state
        try:
            client = NotebookClient(
                book,
                kernel_name=KERNEL,
                timeout=timeout,
                allow_errors=False,
                record_timing=False,
                resources={"metadata": {"path": scratch}},
            )
            t0 = time.perf_counter()
            client.execute()
            elapsed = time.perf_counter() - t0
        finally:
            if env_home is None:
                os.environ.pop("SIBYL_HOME", None)
            else:
                os.environ["SIBYL_HOME"] = env_home
    book.metadata.pop("widgets", None)
    book.metadata[STAMP_KEY] = expected_stamp(book)
    nbformat.validate(book)
    nbformat.write(book, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sibyl_nb.notebook.build",
        description="Execute the demo notebooks and save their outputs.",
    )
    parser.add_argument("names", nargs="*", help="notebook names or stems (default: all in notebooks/)")
    parser.add_argument("--stale", action="store_true", help="only the notebooks whose stamp does not match")
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if any notebook is stale")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        wanted = {Path(n).stem for n in args.names}
        paths = [p for p in paths if p.stem in wanted]
        missing = wanted - {p.stem for p in paths}
        if missing:
            parser.error(f"no notebook named {', '.join(sorted(missing))} in {NOTEBOOKS}")
    if args.check or args.stale:
        stale = [p for p in paths if is_stale(p)]
        if args.check:
            for p in stale:
                print(f"stale: {p.name}")
            return 1 if stale else 0
        paths = stale
    for p in paths:
        print(f"building {p.name} ...", flush=True)
        print(f"  done in {build(p):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
