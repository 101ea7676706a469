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
    (160k calls for a 40k-node graph), and siblings share their parent's path: the parent's text is
    cached, so only the last part is formatted per call."""
    if len(path) < 2:
        return _format(path)
    head = _format_head(path[:-1])
    last = path[-1]
    return f"{head}[{last}]" if isinstance(last, int) else f"{head}.{last}"


def _format(path: Path) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts)


_format_head = functools.lru_cache(maxsize=1024)(_format)
