"""Every problem of a document, not just the first: what ``sibyl validate`` prints.

The loader stops at the first error (one error, exactly located, is what a run needs). To report all of
them, the document is compiled again and again: after each error, the offending key (or list item) is
removed from a copy of the data and the copy is compiled once more, until it loads or nothing is left to
remove; a removed list item's later siblings keep their original paths and lines. An error at a
key that contains a key already removed is a consequence of that removal (``steps`` emptied by removing its
only bad step), so it is not reported. Each problem keeps the loader's own message and line; the column is
where the offending key (or list item) starts on that line.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from ..errors import SibylError, SpecError
from .yaml_lines import LineMap, load_yaml_with_lines, read_yaml_file
from .yaml_path import Path, format_path

__all__ = ["Problem", "document_problems", "file_problems", "MAX_PROBLEMS"]

MAX_PROBLEMS = 200  # one document; each costs a compile, so this also bounds the time


@dataclass(frozen=True, slots=True)
class Problem:
    """One refusal, printable as ``source:line:col: message`` (editors and CI annotate that form)."""

    source: str
    line: int
    col: int
    message: str
    kind: str = "SpecError"
    path: str = ""  # the YAML path (pipelines.p.steps[0].config.max_tokens), "" for the whole document

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}:{self.line}:{self.col}: {where}{self.message}"


class _RecordingLines(LineMap):
    """A LineMap whose errors also carry the path as a tuple (the loader's errors hold it as text)."""

    __slots__ = ()

    def error(self, path: Path, message: str, cls: type[SibylError] = SpecError, **kw: Any) -> SibylError:
        exc = super().error(path, message, cls, **kw)
        exc.yaml_path = tuple(path)  # type: ignore[attr-defined]
        return exc


def _column(text_lines: list[str], line: int | None, path: Path) -> int:
    if not line or line > len(text_lines):
        return 1
    row = text_lines[line - 1]
    last = path[-1] if path else None
    if isinstance(last, str):
        for probe in (f"{last}:", f'"{last}":', f"'{last}':"):
            at = row.find(probe)
            if at >= 0:
                return at + 1
    stripped = row.lstrip()
    col = len(row) - len(stripped) + 1
    if isinstance(last, int) and stripped.startswith("- "):
        col += 2
    return col


def _prune(data: Any, path: Path) -> Path | None:
    """Remove the value at ``path`` (or its nearest existing ancestor); the path removed, or None."""
    parents: list[tuple[Any, Any]] = []
    node = data
    for part in path:
        in_map = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_map or in_list):
            break
        parents.append((node, part))
        node = node[part]
    if not parents:
        return None
    container, key = parents[-1]
    del container[key]
    return tuple(p for _, p in parents)


class _Places:
    """Where each path of the working copy was in the original document (list items shift on removal)."""

    def __init__(self, lines: _RecordingLines) -> None:
        self.lines = lines
        self.origin: dict[Path, Path] = {p: p for p in lines._lines}

    def original(self, path: Path) -> Path:
        for n in range(len(path), -1, -1):
            base = self.origin.get(path[:n])
            if base is not None:
                return base + path[n:]
        return path

    def removed(self, path: Path) -> None:
        """``path`` was deleted: a list item's later siblings move up one index."""
        if not path or not isinstance(path[-1], int):
            return
        parent, index, depth = path[:-1], path[-1], len(path)

        def moved(p: Path) -> Path | None:
            if len(p) < depth or p[: depth - 1] != parent or not isinstance(p[depth - 1], int):
                return p
            if p[depth - 1] == index:
                return None
            if p[depth - 1] > index:
                return parent + (p[depth - 1] - 1,) + p[depth:]
            return p

        new_lines: dict[Path, int] = {}
        new_origin: dict[Path, Path] = {}
        for p, line in self.lines._lines.items():
            q = moved(p)
            if q is not None:
                new_lines[q] = line
                new_origin[q] = self.origin.get(p, p)
        self.lines._lines = new_lines
        self.origin = new_origin


def document_problems(text: str, source: str, *, trusted: bool = False) -> list[Problem]:
    """All problems the loader finds in one document's text (empty: it loads)."""
    from .compile import compile_document

    text_lines = text.splitlines()
    try:
        data, plain = load_yaml_with_lines(text, source)
    except SpecError as exc:  # YAML itself: nothing to compile
        return [Problem(source, exc.line or 1, 1, exc.message, type(exc).__name__, exc.path or "")]
    if data is None:
        return [Problem(source, 1, 1, "the document is empty")]
    shift: Path = ()
    if isinstance(data, list):
        data, shift = {"steps": data}, ("steps",)
    lines = _RecordingLines(source=source)
    for p, ln in plain._lines.items():
        lines.set(shift + tuple(p), ln)
    places = _Places(lines)
    problems: list[Problem] = []
    removed: list[Path] = []  # in the original document's paths
    work = copy.deepcopy(data)
    while len(problems) < MAX_PROBLEMS:
        try:
            compile_document(copy.deepcopy(work), lines, trusted=trusted)
            break
        except SibylError as exc:  # SpecError, or TrustError for what an untrusted document may not reach
            path: Path | None = getattr(exc, "yaml_path", None)
            if path is None:  # raised without the LineMap: find the path its text names
                path = next((p for p in lines._lines if exc.path and format_path(p) == exc.path), ())
            where = places.original(path)
            if not any(where == r[: len(where)] for r in removed):  # else: a consequence of a removal
                line = exc.line or lines.line(path) or 1
                col = _column(text_lines, line, where)
                problems.append(
                    Problem(source, line, col, exc.message, type(exc).__name__, format_path(where))
                )
            gone = _prune(work, path) if path else None
            if gone is None:
                break
            removed.append(places.original(gone))
            places.removed(gone)
    return problems


def file_problems(file: str | FsPath, *, trusted: bool = False) -> list[Problem]:
    """All problems of one document file (an unreadable file is one problem)."""
    source = str(file)
    try:
        text = read_yaml_file(file)
    except SpecError as exc:
        return [Problem(source, exc.line or 1, 1, exc.message, type(exc).__name__)]
    except OSError as exc:
        return [Problem(source, 1, 1, f"cannot read: {exc.strerror or exc}")]
    return document_problems(text, source, trusted=trusted)
