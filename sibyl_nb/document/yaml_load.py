"""Parse one YAML document into plain Python objects and the line of every value, fast and bounded.

Fast: libyaml's C composer (``yaml.CSafeLoader``, bundled in PyYAML's wheels) builds the node tree
with marks; we construct the plain objects from it ourselves, so errors later can say
``pipelines.x.steps[0].config.top_k (line 12)``. The pure-Python composer is the fallback.

Bounded: a document is untrusted input. Before anything is constructed the composed node graph is
measured — aliases are shared nodes there, so a billion-laughs file is a few nodes until expanded —
and refused (:class:`~sibyl_nb.errors.YAMLLimitError`, with the line) when aliases would expand it
past :data:`MAX_ALIAS_EXPANSION` values, when an alias refers to itself, when it nests deeper than
:data:`MAX_DEPTH`, or for an integer longer than :data:`MAX_INT_DIGITS` digits. Bad characters and
encodings, and syntax errors, read as a person would say them (:mod:`.yaml_errors`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..errors import SpecError, YAMLLimitError, YAMLSyntaxError
from .yaml_errors import bad_character, syntax_error
from .yaml_path import Path, format_path

__all__ = ["load", "MAX_DEPTH", "MAX_ALIAS_EXPANSION", "MAX_INT_DIGITS", "MAX_CHARS"]

MAX_DEPTH = 100  # nested mappings/lists; a pipeline document needs perhaps 12
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add beyond what the text itself holds
MAX_INT_DIGITS = 100  # longer is not a setting (and int() of 4301+ digits raises in CPython)
MAX_CHARS = 10_000_000  # a document, not a data set

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NOT_PRINTABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")
_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MAP, _SEQ, _MERGE, _TIMESTAMP = (_TAG + t for t in ("map", "seq", "merge", "timestamp"))
_BOOLS = yaml.constructor.SafeConstructor.bool_values


def load(text: str, source: str | None = None) -> tuple[Any, dict[Path, int]]:
    """(data, path -> line); every refusal is a :class:`SpecError` subclass with the line."""
    if len(text) > MAX_CHARS:
        raise YAMLLimitError(
            f"the document is {len(text):,} characters; more than {MAX_CHARS:,} is refused", source=source
        )
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        raise bad_character(text, bad.start(), source)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise syntax_error(exc, text, source) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"invalid YAML: {exc}", source=source) from None
    except RecursionError:  # the pure-Python composer, on nesting libyaml would have refused
        raise YAMLLimitError(f"nesting deeper than {MAX_DEPTH} levels", source=source) from None
    finally:
        loader.dispose()
    lines: dict[Path, int] = {}
    if node is None:
        return None, lines
    if "&" in text:  # without an anchor there is no alias: no sharing to expand, nothing recursive
        _check_bounds(node, text, source)
    data = _Constructor(loader, lines, source).build(node, ())
    return data, lines


# ---------------------------------------------------------------------- bounds, before construction
def _check_bounds(root: yaml.Node, text: str, source: str | None) -> None:
    """Measure the expanded document on the composed graph (a shared node = an alias), iteratively:
    expanded size, depth (an alias's subtree counts at the depth it is used) and self-reference."""
    cap = MAX_ALIAS_EXPANSION * 2 + 1
    size: dict[int, int] = {}  # id(node) -> values it expands to (capped)
    height: dict[int, int] = {}
    on_stack: set[int] = set()
    biggest: tuple[int, yaml.Node, int] | None = None  # (size, parent, index) of the largest alias
    stack: list[tuple[yaml.Node, list[yaml.Node] | None, int]] = [(root, None, 1)]
    while stack:
        node, kids, depth = stack[-1]
        if kids is None:
            if id(node) in size:  # the same node twice in one list: measured already
                stack.pop()
                continue
            if depth > MAX_DEPTH:
                raise _too_deep(node.start_mark.line + 1, source)
            kids = _children(node)
            stack[-1] = (node, kids, depth)
            on_stack.add(id(node))
            todo = []
            for i, kid in enumerate(kids):
                k = id(kid)
                if k in on_stack:
                    raise YAMLLimitError(
                        "a recursive alias: it refers to the mapping or list that contains it",
                        line=_alias_line(node, i, text),
                        source=source,
                    )
                if k in size:  # reached before: this is an alias
                    if depth + height[k] > MAX_DEPTH:
                        raise _too_deep(_alias_line(node, i, text), source)
                    if biggest is None or size[k] > biggest[0]:
                        biggest = (size[k], node, i)
                else:
                    todo.append((kid, None, depth + 1))
            if todo:
                stack.extend(reversed(todo))
                continue
        stack.pop()
        on_stack.discard(id(node))
        size[id(node)] = min(cap, 1 + sum(size[id(k)] for k in kids))
        height[id(node)] = 1 + max((height[id(k)] for k in kids), default=0)
    added = size[id(root)] - len(size)
    if added > MAX_ALIAS_EXPANSION:
        raise YAMLLimitError(
            f"aliases would expand this document to more than {MAX_ALIAS_EXPANSION:,} extra values "
            f"(an alias bomb?); refused before expanding",
            line=_alias_line(biggest[1], biggest[2], text) if biggest else None,
            source=source,
        )


def _too_deep(line: int, source: str | None) -> YAMLLimitError:
    return YAMLLimitError(
        f"nesting deeper than {MAX_DEPTH} levels (mappings and lists inside each other)",
        line=line,
        source=source,
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _alias_line(parent: yaml.Node, index: int, text: str) -> int:
    """Best line for the alias at ``parent``'s ``index``-th child (the composer keeps no alias mark):
    a mapping's key line; in a list, the first ``*`` after the previous item."""
    if isinstance(parent, yaml.MappingNode):
        key: yaml.Node = parent.value[index // 2][0]
        return key.start_mark.line + 1
    start = parent.value[index - 1].end_mark.index if index else parent.start_mark.index
    star = text.find("*", start)
    at = star if star >= 0 else start
    return text.count("\n", 0, at) + 1


# ---------------------------------------------------------------------- construction
class _Constructor:
    """Plain objects from the (bounded) node tree, recording each path's line."""

    def __init__(self, loader: Any, lines: dict[Path, int], source: str | None) -> None:
        self.loader = loader
        self.lines = lines
        self.source = source

    def error(self, node: yaml.Node, message: str, path: Path, cls: type[SpecError] = SpecError) -> SpecError:
        return cls(message, path=format_path(path), line=node.start_mark.line + 1, source=self.source)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.lines[path] = node.start_mark.line + 1
        return self.value(node, path)

    def value(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if len(path) >= MAX_DEPTH:
            raise _too_deep(node.start_mark.line + 1, self.source)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                raise self.tag_error(node, path)
            return self.mapping(node, path)
        if node.tag != _SEQ:
            raise self.tag_error(node, path)
        lines = self.lines
        out = []
        for i, item in enumerate(node.value):
            p = path + (i,)
            lines[p] = item.start_mark.line + 1
            out.append(self.value(item, p))
        return out

    def mapping(self, node: yaml.MappingNode, path: Path) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        merged: list[yaml.Node] = []
        lines = self.lines
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.append(value_node)
                continue
            key = self.key(key_node, path)
            if key in out:
                raise self.error(key_node, f"duplicate key '{key}'", path + (key,))
            p = path + (key,)
            # the key's own line is the better place to point at ("this key is wrong", "this list...")
            lines[p] = key_node.start_mark.line + 1
            out[key] = self.value(value_node, p)
        if merged:  # merged keys first, as PyYAML orders them; the keys written here keep their values
            base: dict[Any, Any] = {}
            self.merge(base, merged, path, out)
            base.update(out)
            return base
        return out

    def merge(self, out: dict[Any, Any], sources: list[yaml.Node], path: Path, own: dict[Any, Any]) -> None:
        """``<<: *base`` / ``<<: [*a, *b]``: keys written here win, then the first source that has one."""
        for src in sources:
            items = src.value if isinstance(src, yaml.SequenceNode) else [src]
            for item in items:
                if not isinstance(item, yaml.MappingNode):
                    raise self.error(item, "'<<' merges mappings only (an alias of a mapping)", path)
                for key_node, value_node in item.value:
                    if key_node.tag == _MERGE:
                        self.merge(out, [value_node], path, own)
                        continue
                    key = self.key(key_node, path)
                    if key not in out and key not in own:
                        p = path + (key,)
                        self.lines[p] = key_node.start_mark.line + 1
                        out[key] = self.value(value_node, p)

    def key(self, node: yaml.Node, path: Path) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, "mapping keys must be plain words or numbers, not lists or mappings", path)
        return self.scalar(node, path)

    def scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag, text = node.tag, node.value
        if tag == _STR:
            return text
        if tag == _INT:
            digits = sum(c.isdigit() for c in text) if len(text) > MAX_INT_DIGITS else 0
            if digits > MAX_INT_DIGITS:
                raise self.error(
                    node,
                    f"an integer with {digits:,} digits; more than {MAX_INT_DIGITS} is refused "
                    f"(quote it if it is text)",
                    path,
                    YAMLLimitError,
                )
            return int(text) if text.isdigit() else self.loader.construct_yaml_int(node)
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return _BOOLS[text.lower()]
        if tag == _FLOAT:
            return self.loader.construct_yaml_float(node)
        if tag != _TIMESTAMP:
            raise self.tag_error(node, path)
        try:
            return self.loader.construct_yaml_timestamp(node)
        except (ValueError, TypeError, yaml.YAMLError) as exc:  # !!timestamp 2024-13-45
            raise self.error(node, f"{text!r} is not a valid date or time: {exc}", path) from None

    def tag_error(self, node: yaml.Node, path: Path) -> SpecError:
        tag = node.tag.replace(_TAG, "!!")
        return self.error(
            node,
            f"the tag {tag} is not allowed: a document holds plain data (text, numbers, true/false, "
            f"lists and mappings) and never builds objects",
            path,
            YAMLSyntaxError,
        )
