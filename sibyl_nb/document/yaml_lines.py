"""Remember the line of every value of a document, by path, and load YAML that way.

``LineMap`` is what errors use to say ``pipelines.x.steps[0].config.top_k (line 12)``; documents
built from Python dicts get an empty one. The parsing itself (fast, bounded, with errors in words)
is in :mod:`.yaml_load`, imported on the first YAML load so ``from_dict`` never pays for PyYAML.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from ..errors import SibylError, SpecError
from .yaml_path import Path, format_path

__all__ = ["LineMap", "load_yaml_with_lines", "read_yaml_file"]


class LineMap:
    """Path -> 1-based line; a missing path reports the line of its nearest recorded ancestor."""

    __slots__ = ("_lines", "source")

    def __init__(self, lines: dict[Path, int] | None = None, source: str | None = None) -> None:
        self._lines = lines or {}
        self.source = source

    def line(self, path: Path) -> int | None:
        lines = self._lines
        if not lines:
            return None
        path = tuple(path)
        while True:
            line = lines.get(path)
            if line is not None or not path:
                return line
            path = path[:-1]

    def set(self, path: Path, line: int) -> None:
        self._lines[tuple(path)] = line

    def error(self, path: Path, message: str, cls: type[SibylError] = SpecError, **kw: Any) -> SibylError:
        """Build (not raise) a :class:`SpecError` located at ``path``."""
        return cls(message, path=format_path(path), line=self.line(path), source=self.source, **kw)


def read_yaml_file(path: str | FsPath) -> str:
    """A document file's text; a UTF-16/32 or non-UTF-8 file is a clear error naming the line."""
    data = FsPath(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from .yaml_errors import bad_bytes

        raise bad_bytes(data, exc, str(path)) from None


def load_yaml_with_lines(text: str, source: str | None = None) -> tuple[Any, LineMap]:
    """Parse one YAML document; every refusal is a :class:`SpecError` subclass with the line."""
    from .yaml_load import load

    data, lines = load(text, source)
    return data, LineMap(lines, source)
