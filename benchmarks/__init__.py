"""sibyl_nb's benchmarks, side by side with the peers: ``python -m benchmarks [--quick] [--only a,b]``.

A suite is any module here (``benchmarks/NAME.py``, or a package ``benchmarks/NAME/``) that defines
``run(quick: bool) -> list[dict]``: drop one in and the runner finds it (``NAME_bench`` is listed as
``NAME``; a module starting with ``_``, and ``peers``, are not suites). Each row is a dict with
``benchmark``, ``unit``, ``sibyl_nb`` and either ``peers`` (``{"LangGraph": 1.2, ...}``, one value per
peer, ``None`` where it has no such workload) or one ``peer`` + ``peer_value``; optional ``goal``
(``"<= 15 us"``, ``"<= 0.5 x fastest peer"``: checked and marked in the table) and ``notes``. Wide rows
of another shape are kept too. ``__main__`` runs each suite in a fresh interpreter and writes
``RESULTS.md``; ``--quick`` asks every suite for its short form (CI smoke run).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["discover", "HERE"]

HERE = Path(__file__).resolve().parent
NOT_SUITES = {"peers"}
FIRST = ("engine",)  # the headline suite leads the table


def discover() -> list[tuple[str, str]]:
    """(suite name, module) for every suite in this folder, read from the source (nothing imported)."""
    found = []
    for path in sorted(HERE.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            stem, source = path.name, path / "__init__.py"
        elif path.suffix == ".py":
            stem, source = path.stem, path
        else:
            continue
        if stem.startswith("_") or stem in NOT_SUITES:
            continue
        if re.search(r"^def run\(", source.read_text(encoding="utf-8"), re.MULTILINE):
            name = stem[: -len("_bench")] if stem.endswith("_bench") else stem
            found.append((name, f"benchmarks.{stem}"))
    return sorted(found, key=lambda s: (s[0] not in FIRST, FIRST.index(s[0]) if s[0] in FIRST else 0, s[0]))
