"""Where on-disk defaults live: ``$SIBYL_HOME``, else ``./.sibyl`` in the project (notebook) folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["sibyl_home"]


def sibyl_home(*parts: str, create: bool = True) -> Path:
    """``$SIBYL_HOME/<parts>`` (default ``./.sibyl``): sessions, caches, checkpoints, SQLite files."""
    base = Path(os.environ.get("SIBYL_HOME") or Path.cwd() / ".sibyl")
    path = base.joinpath(*parts)
    if create:
        (path if not path.suffix else path.parent).mkdir(parents=True, exist_ok=True)
    return path
