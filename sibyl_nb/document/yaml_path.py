"""A value's place in a document, and how errors write it: ``("steps", 0, "config")`` is
``steps[0].config``. Its own module because the YAML loader and the line map both need it, and the
line map imports the loader lazily (no cycle)."""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["Path", "format_path"]

Path = tuple[Any, ...]  # ("pipelines", "x", "steps", 0, "config")


def format_path(path: Path) -> str:
    """``("steps", 0, "config")`` -> ``steps[0].config``. The loader names every node and edge this way
    (160k calls for a 40k-node graph), and siblings share their parent's path: each parent's text is
    cached, built from its own parent's, so only the last part is formatted per call."""
    if len(path) < 2:
        return _format(path)
    return _join(_format_head(path[:-1]), path[-1])


def _join(head: str, last: Any) -> str:
    return f"{head}[{last}]" if isinstance(last, int) else f"{head}.{last}"


def _format(path: Path) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts)


@functools.lru_cache(maxsize=1024)
def _format_head(path: Path) -> str:
    return _format(path) if len(path) < 2 else _join(_format_head(path[:-1]), path[-1])
