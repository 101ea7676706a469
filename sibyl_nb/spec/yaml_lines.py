"""Load YAML into plain Python objects *and* remember the line of every value, by path.

PyYAML's composer keeps marks on nodes; we construct the objects ourselves from that node tree so
errors later can say ``pipelines.x.steps[0].config.top_k (line 12)``.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import SpecError

__all__ = ["Path", "LineMap", "load_yaml_with_lines", "format_path"]

Path = tuple[Any, ...]  # ("pipelines", "x", "steps", 0, "config")


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class LineMap:
    """Path -> 1-based line; a missing path reports the line of its nearest recorded ancestor."""

    __slots__ = ("_lines", "source")

    def __init__(self, lines: dict[Path, int] | None = None, source: str | None = None) -> None:
        self._lines = lines or {}
        self.source = source

    def line(self, path: Path) -> int | None:
        path = tuple(path)
        while True:
            line = self._lines.get(path)
            if line is not None or not path:
                return line
            path = path[:-1]

    def set(self, path: Path, line: int) -> None:
        self._lines[tuple(path)] = line

    def error(self, path: Path, message: str, cls: type[SpecError] = SpecError, **kw: Any) -> SpecError:
        """Build (not raise) a :class:`SpecError` located at ``path``."""
        return cls(message, path=format_path(path), line=self.line(path), source=self.source, **kw)


class _Builder(yaml.SafeLoader):
    pass


def load_yaml_with_lines(text: str, source: str | None = None) -> tuple[Any, LineMap]:
    """Parse one YAML document; syntax errors become :class:`SpecError` with the line."""
    loader = _Builder(text)
    lines: dict[Path, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, LineMap(lines, source)
        data = _construct(loader, node, (), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        msg = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise SpecError(f"invalid YAML: {msg}", line=line, source=source) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=source) from None
    finally:
        loader.dispose()
    return data, LineMap(lines, source)


def _construct(loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise SpecError("mapping keys must be scalars", line=key_node.start_mark.line + 1)
            if key in out:
                raise SpecError(
                    f"duplicate key '{key}'",
                    path=format_path(path + (key,)),
                    line=key_node.start_mark.line + 1,
                )
            out[key] = _construct(loader, value_node, path + (key,), lines)
            # the key's own line is the better place to point at ("this key is wrong", "this list...")
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, path + (i,), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
