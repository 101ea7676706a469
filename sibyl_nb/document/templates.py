"""``${...}`` templates in config values: compiled once at load time, rendered per node execution.

A string that is exactly one reference (``"${conversation_history}"``) renders to the raw value (a
list stays a list); a reference inside text renders as readable text (:func:`to_text`).

Environment variables are never read by a bare name in text: ``${env:NAME}`` reads one explicitly (the
loader lists it on the spec), and in a connection setting (:data:`CONNECTION_KEYS`: ``redis_url``,
``database_url``, ``base_url``, ``scheduler_address``) an UPPER_CASE name is the environment variable,
as the seed writes ``redis_url: "${REDIS_URL}"``. What every other name means is the table in
:mod:`sibyl_nb.engine.scope`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from ..errors import ExpressionError, TemplateError
from .expressions import MISSING, REF_RE, Ref, parse_ref
from .yaml_path import format_path

__all__ = [
    "compile_value",
    "to_text",
    "Renderer",
    "CONNECTION_KEYS",
    "ENV_PREFIX",
    "is_env_name",
    "env_name",
]

# Settings that name where a server is: the one place a bare ``${UPPER_CASE}`` reads the environment.
CONNECTION_KEYS = frozenset({"redis_url", "database_url", "base_url", "scheduler_address"})
# A Ref whose root starts with this reads the environment variable named by the rest.
ENV_PREFIX = "env:"
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Resolver = Callable[[Ref], Any]
Renderer = Callable[[Resolver], Any]


def to_text(value: Any) -> str:
    """How a value reads inside a prompt: answers by their text, documents as a numbered list."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dict):
        for key in ("answer", "text", "content", "summary"):
            text = value.get(key)
            if isinstance(text, str):
                return text
        if isinstance(value.get("documents"), list):
            return to_text(value["documents"])
        query = value.get("query")
        if isinstance(query, str):
            return query
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (list, tuple)):
        lines = []
        for i, item in enumerate(value, 1):
            if isinstance(item, dict) and "role" in item and "content" in item:
                lines.append(f"{item['role']}: {item['content']}")
            elif isinstance(item, dict) and ("title" in item or "text" in item):
                title = item.get("title") or ""
                text = item.get("text") or ""
                lines.append(f"[{i}] {title}: {text}" if title else f"[{i}] {text}")
            else:
                lines.append(to_text(item))
        return "\n".join(lines)
    return str(value)


def is_env_name(name: str) -> bool:
    """``REDIS_URL``-style: the names a connection setting reads from the environment."""
    return bool(_ENV_NAME_RE.match(name)) and name.upper() == name and any(c.isalpha() for c in name)


def env_name(ref: Ref) -> str | None:
    """The environment variable ``ref`` reads, or None when it reads no environment variable."""
    return ref.root[len(ENV_PREFIX) :] if ref.root.startswith(ENV_PREFIX) else None


def find_template_refs(text: str, connection: bool = False) -> list[tuple[int, int, Ref]]:
    """Every ``${...}`` in ``text`` as (start, end, Ref); ``${env:NAME}`` (and, in a connection setting,
    ``${UPPER_NAME}``) becomes a Ref rooted at ``env:NAME``. An unclosed ``${`` is an error."""
    found: list[tuple[int, int, Ref]] = []
    pos = 0
    for m in REF_RE.finditer(text):
        _check_closed(text, pos, m.start())
        pos = m.end()
        body = m.group(1)
        if body.strip().startswith(ENV_PREFIX):
            name, _, default = body.strip()[len(ENV_PREFIX) :].partition(":-")
            if not _ENV_NAME_RE.match(name):
                raise ExpressionError(f"'${{{body}}}': '{name}' is not an environment variable name")
            ref = Ref(ENV_PREFIX + name, (), default if ":-" in body else None, body.strip())
        else:
            ref = parse_ref(body)
            if connection and not ref.fields and is_env_name(ref.root):
                ref = Ref(ENV_PREFIX + ref.root, (), ref.default, ref.text)
        found.append((m.start(), m.end(), ref))
    _check_closed(text, pos, len(text))
    return found


def _check_closed(text: str, start: int, end: int) -> None:
    at = text.find("${", start, end)
    if at >= 0:
        shown = text[at : at + 30]
        raise ExpressionError(f"this '${{' is never closed: {shown!r} (write ${{name}} or ${{node.field}})")


def _fail(ref: Ref, where: str) -> TemplateError:
    return TemplateError(
        f"{ref} has no value: no node output, upstream field, input field, state or session field "
        f"called '{ref.root}'" + (f" (at {where})" if where else "")
    )


def _lookup(resolve: Resolver, ref: Ref, where: str) -> Any:
    value = resolve(ref)
    if value is MISSING:
        if ref.default is not None:
            return ref.default
        raise _fail(ref, where)
    return value


def compile_value(
    value: Any, where: str | tuple[Any, ...] = ""
) -> tuple[Renderer | None, list[tuple[Ref, Any]]]:
    """Compile ``value`` (str/list/dict, nested). Returns (renderer or None if static, refs with paths).

    ``where`` is a YAML path tuple (refs come back with the exact path of their string) or a label.
    A malformed reference raises :class:`ExpressionError` whose ``yaml_path`` is the string's path.
    """
    refs: list[tuple[Ref, Any]] = []
    path = where if isinstance(where, tuple) else (where,) if where else ()
    fn = _compile(value, path, refs)
    return fn, refs


def _compile(value: Any, path: tuple[Any, ...], refs: list[tuple[Ref, Any]]) -> Renderer | None:
    where = format_path(path)
    if isinstance(value, str):
        if "${" not in value:
            return None
        try:
            found = find_template_refs(value, connection=bool(path) and path[-1] in CONNECTION_KEYS)
        except ExpressionError as exc:
            exc.yaml_path = path  # type: ignore[attr-defined]
            raise
        for _, _, ref in found:
            refs.append((ref, path))
        if len(found) == 1 and found[0][0] == 0 and found[0][1] == len(value):
            ref = found[0][2]
            return lambda r: _lookup(r, ref, where)
        parts: list[str | Ref] = []
        pos = 0
        for start, end, ref in found:
            if start > pos:
                parts.append(value[pos:start])
            parts.append(ref)
            pos = end
        if pos < len(value):
            parts.append(value[pos:])

        def render_text(r: Resolver) -> str:
            return "".join(p if isinstance(p, str) else to_text(_lookup(r, p, where)) for p in parts)

        return render_text
    if isinstance(value, dict):
        items = [(k, _compile(v, path + (k,), refs), v) for k, v in value.items()]
        if all(fn is None for _, fn, _ in items):
            return None
        return lambda r: {k: (fn(r) if fn is not None else v) for k, fn, v in items}
    if isinstance(value, list):
        elems = [(_compile(v, path + (i,), refs), v) for i, v in enumerate(value)]
        if all(fn is None for fn, _ in elems):
            return None
        return lambda r: [fn(r) if fn is not None else v for fn, v in elems]
    return None
