"""``${...}`` references, templates and conditions, evaluated safely.

Conditions (``${evaluation.score} < 0.8``, ``${classify.type} == "factual"``) are parsed with
:mod:`ast` and compiled into closures over a whitelist of node types: comparisons, boolean logic,
arithmetic, literals, field access. Never ``eval``; no calls, no dunder access.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ExpressionError

__all__ = ["Ref", "REF_RE", "parse_ref", "find_refs", "Condition", "compile_condition", "MISSING"]

REF_RE = re.compile(r"\$\{([^{}]*)\}")
_PATH_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_\-]*)((?:\.[A-Za-z0-9_\-]+|\[\s*-?\d+\s*\])*)\s*$")
_STEP_RE = re.compile(r"\.([A-Za-z0-9_\-]+)|\[\s*(-?\d+)\s*\]")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference: ``root`` plus a field path, and an optional ``default`` (``${X:-default}``)."""

    root: str
    fields: tuple[str | int, ...] = ()
    default: str | None = None
    text: str = ""

    def __str__(self) -> str:
        return "${" + self.text + "}"


def parse_ref(text: str) -> Ref:
    """Parse the inside of ``${...}``: ``name``, ``node.field.sub``, ``list[0]``, ``VAR:-default``."""
    body, default = text, None
    if ":-" in text:
        body, default = text.split(":-", 1)
    m = _PATH_RE.match(body)
    if not m:
        raise ExpressionError(f"'${{{text}}}' is not a reference: expected name, name.field or name[0]")
    fields: list[str | int] = []
    for name, index in _STEP_RE.findall(m.group(2)):
        fields.append(int(index) if index else name)
    for f in fields:
        if isinstance(f, str) and f.startswith("__"):
            raise ExpressionError(f"'${{{text}}}': access to '{f}' is not allowed")
    return Ref(m.group(1), tuple(fields), default, text.strip())


def find_refs(text: str) -> list[tuple[int, int, Ref]]:
    """Every ``${...}`` in ``text`` as (start, end, Ref)."""
    return [(m.start(), m.end(), parse_ref(m.group(1))) for m in REF_RE.finditer(text)]


# ---------------------------------------------------------------------------------------------
# Conditions

Resolver = Callable[[Ref], Any]
_Fn = Callable[[Resolver], Any]

_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CONSTANT_NAMES = {
    "true": True,
    "false": False,
    "True": True,
    "False": False,
    "null": None,
    "none": None,
    "None": None,
}


@dataclass(slots=True)
class Condition:
    """A compiled condition: ``refs`` for static checks, ``evaluate(resolver)`` at run time."""

    text: str
    refs: tuple[Ref, ...]
    _fn: _Fn

    def evaluate(self, resolve: Resolver) -> bool:
        return bool(self._fn(resolve))

    def value(self, resolve: Resolver) -> Any:
        return self._fn(resolve)


def compile_condition(text: Any) -> Condition:
    """Compile a condition string (or a YAML bool) into a :class:`Condition`."""
    if isinstance(text, bool):
        const = text
        return Condition(str(text).lower(), (), lambda _r: const)
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"a condition must be a non-empty string, got {text!r}")
    refs: list[Ref] = []

    def placeholder(m: re.Match[str]) -> str:
        refs.append(parse_ref(m.group(1)))
        return f"(__ref{len(refs) - 1})"

    source = REF_RE.sub(placeholder, text.strip())
    if "${" in source:
        raise ExpressionError(f"unbalanced '${{' in condition {text!r}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse condition {text!r}: {exc.msg}") from None
    fn = _Compiler(refs, text).build(tree.body)
    return Condition(text.strip(), tuple(refs), fn)


class _Compiler:
    """Turns a whitelisted AST into nested closures (fast to evaluate, nothing executable)."""

    def __init__(self, refs: list[Ref], text: str) -> None:
        self.refs = refs
        self.text = text

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(f"{what} is not allowed in condition {self.text!r}")

    def build(self, node: ast.AST) -> _Fn:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, type(node).__name__)
        return method(node)

    def _Constant(self, node: ast.Constant) -> _Fn:
        value = node.value
        return lambda _r: value

    def _Name(self, node: ast.Name) -> _Fn:
        name = node.id
        if name.startswith("__ref"):
            ref = self.refs[int(name[5:])]
            return lambda r: r(ref)
        if name in _CONSTANT_NAMES:
            value = _CONSTANT_NAMES[name]
            return lambda _r: value
        if name.startswith("__"):
            raise self.fail(node, f"name '{name}'")
        ref = Ref(name, (), None, name)
        self.refs.append(ref)
        return lambda r: r(ref)

    def _Attribute(self, node: ast.Attribute) -> _Fn:
        if node.attr.startswith("_"):
            raise self.fail(node, f"attribute '{node.attr}'")
        base, attr = self.build(node.value), node.attr
        return lambda r: _field(base(r), attr)

    def _Subscript(self, node: ast.Subscript) -> _Fn:
        base, index = self.build(node.value), self.build(node.slice)
        return lambda r: _field(base(r), index(r))

    def _Compare(self, node: ast.Compare) -> _Fn:
        left = self.build(node.left)
        ops = []
        for op, comp in zip(node.ops, node.comparators, strict=True):
            fn = _CMP.get(type(op))
            if fn is None:
                raise self.fail(op, type(op).__name__)
            ops.append((fn, self.build(comp)))
        text = self.text

        def compare(r: Resolver) -> bool:
            a = left(r)
            for fn, right in ops:
                b = right(r)
                try:
                    ok = fn(a, b)
                except TypeError:
                    raise ExpressionError(f"condition {text!r}: cannot compare {a!r} with {b!r}") from None
                if not ok:
                    return False
                a = b
            return True

        return compare

    def _BoolOp(self, node: ast.BoolOp) -> _Fn:
        parts = [self.build(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda r: all(p(r) for p in parts)
        return lambda r: any(p(r) for p in parts)

    def _UnaryOp(self, node: ast.UnaryOp) -> _Fn:
        operand = self.build(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda r: not operand(r)
        if isinstance(node.op, ast.USub):
            return lambda r: -operand(r)
        if isinstance(node.op, ast.UAdd):
            return lambda r: +operand(r)
        raise self.fail(node, type(node.op).__name__)

    def _BinOp(self, node: ast.BinOp) -> _Fn:
        fn = _BIN.get(type(node.op))
        if fn is None:
            raise self.fail(node, type(node.op).__name__)
        left, right = self.build(node.left), self.build(node.right)
        text = self.text

        def binop(r: Resolver) -> Any:
            a, b = left(r), right(r)
            if isinstance(a, (str, list)) and isinstance(b, int) and fn is operator.mul and b > 10_000:
                raise ExpressionError(f"condition {text!r}: repetition too large")
            try:
                return fn(a, b)
            except (TypeError, ZeroDivisionError) as exc:
                raise ExpressionError(f"condition {text!r}: {exc}") from None

        return binop

    def _IfExp(self, node: ast.IfExp) -> _Fn:
        test, body, orelse = self.build(node.test), self.build(node.body), self.build(node.orelse)
        return lambda r: body(r) if test(r) else orelse(r)

    def _List(self, node: ast.List) -> _Fn:
        items = [self.build(e) for e in node.elts]
        return lambda r: [i(r) for i in items]

    def _Tuple(self, node: ast.Tuple) -> _Fn:
        items = [self.build(e) for e in node.elts]
        return lambda r: tuple(i(r) for i in items)

    def _Set(self, node: ast.Set) -> _Fn:
        items = [self.build(e) for e in node.elts]
        return lambda r: {i(r) for i in items}


def _field(value: Any, key: Any) -> Any:
    """``value.key`` for dicts, lists (int index) and plain attributes (no dunders)."""
    if isinstance(value, dict):
        return value.get(key, MISSING)
    if isinstance(value, (list, tuple)) and isinstance(key, int):
        return value[key] if -len(value) <= key < len(value) else MISSING
    if isinstance(key, str) and not key.startswith("_"):
        return getattr(value, key, MISSING)
    return MISSING
