"""``${...}`` references, templates and conditions, evaluated safely.

Conditions (``${evaluation.score} < 0.8``, ``${classify.type} == "factual"``) are parsed with
:mod:`ast` and compiled into closures over a whitelist of node types: comparisons, boolean logic,
arithmetic, literals, field access. Never ``eval``; no calls, no dunder access.

Bounded by construction: the text, the syntax tree's depth and node count are capped at compile time,
and every value an operator builds (repetition, concatenation, literals, big integers) is size-checked
*before* it is built, so no condition can take unbounded time or memory. Every failure, at compile
or evaluation time, is an :class:`ExpressionError`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ExpressionError, SibylError

__all__ = [
    "Ref",
    "REF_RE",
    "parse_ref",
    "find_refs",
    "Condition",
    "compile_condition",
    "MISSING",
    "MAX_CONDITION_CHARS",
    "MAX_DEPTH",
    "MAX_NODES",
    "MAX_SIZE",
    "MAX_INT_BITS",
]

MAX_CONDITION_CHARS = 10_000  # longer text is refused before parsing
MAX_DEPTH = 100  # nesting of the syntax tree
MAX_NODES = 1_000  # syntax-tree nodes in one condition
MAX_SIZE = 1_000_000  # characters / elements (counted through nesting) of any value an operator builds
MAX_INT_BITS = 65_536  # integers an operator builds (about 20,000 digits)

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
    path: str | None = None  # where the loader found it, so a run-time failure can say so
    line: int | None = None

    def evaluate(self, resolve: Resolver) -> bool:
        return bool(self.value(resolve))

    def value(self, resolve: Resolver) -> Any:
        """Evaluate; whatever goes wrong (a type mismatch, a size cap) is an :class:`ExpressionError`."""
        try:
            return self._fn(resolve)
        except SibylError:  # ExpressionError, or a resolver's TemplateError: already clear
            raise
        except RecursionError:
            raise ExpressionError(f"condition {self.text!r}: nested too deeply to evaluate") from None
        except MemoryError:
            raise ExpressionError(f"condition {self.text!r}: value too large") from None
        except Exception as exc:  # a resolver or operator failing: still the condition's error
            raise ExpressionError(f"condition {self.text!r}: {type(exc).__name__}: {exc}") from None


_PLACEHOLDER_RE = re.compile(r"\b__ref")


def compile_condition(text: Any) -> Condition:
    """Compile a condition string (or a YAML bool) into a :class:`Condition`.

    A condition without references is evaluated once here, so a constant that breaks a cap
    (``'a' * 10000 * 10000``) is refused at load time, not half-way through a run.
    """
    if isinstance(text, bool):
        const = text
        return Condition(str(text).lower(), (), lambda _r: const)
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(f"a condition must be a non-empty string, got {text!r}")
    if len(text) > MAX_CONDITION_CHARS:
        raise ExpressionError(
            f"condition is {len(text):,} characters long (at most {MAX_CONDITION_CHARS:,} are allowed)"
        )
    refs: list[Ref] = []

    def placeholder(m: re.Match[str]) -> str:
        refs.append(parse_ref(m.group(1)))
        return f"(__ref{len(refs) - 1})"

    if _PLACEHOLDER_RE.search(REF_RE.sub("", text)):
        raise ExpressionError(f"name '__ref...' is not allowed in condition {text!r}")
    source = REF_RE.sub(placeholder, text.strip())
    if "${" in source:
        raise ExpressionError(f"unbalanced '${{' in condition {text!r}")
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"cannot parse condition {text!r}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        # NUL bytes (ValueError), parser stack exhaustion on pathological nesting (RecursionError/MemoryError)
        raise ExpressionError(f"cannot parse condition {text!r}: {type(exc).__name__}") from None
    fn = _Compiler(refs, text).compile(tree.body)
    cond = Condition(text.strip(), tuple(refs), fn)
    if not refs:
        cond.value(lambda _ref: MISSING)  # constants only: any cap it breaks is a load-time error
    return cond


def _weight(value: Any, budget: int = MAX_SIZE) -> int:
    """Characters/elements in ``value``, counted through nesting (a shared sublist counts each time
    it appears); stops counting once past ``budget``, so it is O(budget) whatever ``value`` is."""
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, (str, bytes)):
            total += max(len(v), 1)
        elif isinstance(v, (list, tuple, set, frozenset)):
            total += 1
            if total + len(v) > budget:
                return budget + 1
            stack.extend(v)
        elif isinstance(v, dict):
            total += 1
            if total + 2 * len(v) > budget:
                return budget + 1
            stack.extend(v.keys())
            stack.extend(v.values())
        else:
            total += 1
        if total > budget:
            return budget + 1
    return total


def _check_int(value: Any, text: str) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError(f"condition {text!r}: integer too large (over {MAX_INT_BITS:,} bits)")
    return value


def _safe_binop(fn: Callable[[Any, Any], Any], a: Any, b: Any, text: str) -> Any:
    """``fn(a, b)`` after checking the result cannot exceed the caps (checked before it is built)."""
    if fn is operator.mul:
        seq, count = (a, b) if not isinstance(a, int) else (b, a)
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
            if count > 0 and _weight(seq) * count > MAX_SIZE:
                raise ExpressionError(
                    f"condition {text!r}: repetition would build a value over {MAX_SIZE:,} elements"
                )
        elif isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"condition {text!r}: integer too large (over {MAX_INT_BITS:,} bits)")
    elif fn is operator.add:
        if (
            isinstance(a, (str, bytes, list, tuple))
            and type(a) is type(b)
            and _weight(a) + _weight(b) > MAX_SIZE
        ):
            raise ExpressionError(
                f"condition {text!r}: concatenation would build a value over {MAX_SIZE:,} elements"
            )
    elif fn is operator.mod and isinstance(a, (str, bytes)):
        # printf-style formatting takes widths from the text ('%999999999d'): no formatting in conditions
        raise ExpressionError(f"condition {text!r}: string formatting with '%' is not allowed")
    try:
        return _check_int(fn(a, b), text)
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise ExpressionError(f"condition {text!r}: {exc}") from None


class _Compiler:
    """Turns a whitelisted AST into nested closures (fast to evaluate, nothing executable)."""

    def __init__(self, refs: list[Ref], text: str) -> None:
        self.refs = refs
        self.text = text
        self.depth = 0
        self.nodes = 0

    def fail(self, node: ast.AST, what: str) -> ExpressionError:
        return ExpressionError(f"{what} is not allowed in condition {self.text!r}")

    def compile(self, node: ast.AST) -> _Fn:
        # Count first, without recursion, so a pathological tree never reaches the recursive build.
        count = 0
        stack: list[tuple[ast.AST, int]] = [(node, 1)]
        while stack:
            n, depth = stack.pop()
            count += 1
            if count > MAX_NODES:
                raise ExpressionError(f"condition {self.text!r} is too complex (over {MAX_NODES:,} parts)")
            if depth > MAX_DEPTH:
                raise ExpressionError(
                    f"condition {self.text!r} is nested too deeply (over {MAX_DEPTH} levels)"
                )
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(n))
        return self.build(node)

    def build(self, node: ast.AST) -> _Fn:
        method: Callable[[ast.AST], _Fn] | None = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.fail(node, type(node).__name__)
        return method(node)

    def _Constant(self, node: ast.Constant) -> _Fn:
        value = node.value
        if isinstance(value, (bytes, complex)) or value is Ellipsis:
            raise self.fail(node, f"constant {type(value).__name__}")
        _check_int(value, self.text)
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
                    ok = bool(fn(a, b))
                except (TypeError, ValueError, ArithmeticError):
                    raise ExpressionError(
                        f"condition {text!r}: cannot compare {_short(a)} with {_short(b)}"
                    ) from None
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
        text = self.text
        if isinstance(node.op, ast.Not):
            return lambda r: not operand(r)
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            fn = operator.neg if isinstance(node.op, ast.USub) else operator.pos

            def sign(r: Resolver) -> Any:
                v = operand(r)
                if not isinstance(v, (int, float)):
                    raise ExpressionError(f"condition {text!r}: cannot negate {_short(v)}")
                return fn(v)

            return sign
        raise self.fail(node, type(node.op).__name__)

    def _BinOp(self, node: ast.BinOp) -> _Fn:
        fn = _BIN.get(type(node.op))
        if fn is None:
            raise self.fail(node, type(node.op).__name__)
        left, right = self.build(node.left), self.build(node.right)
        text = self.text
        return lambda r: _safe_binop(fn, left(r), right(r), text)

    def _IfExp(self, node: ast.IfExp) -> _Fn:
        test, body, orelse = self.build(node.test), self.build(node.body), self.build(node.orelse)
        return lambda r: body(r) if test(r) else orelse(r)

    def _collection(self, elts: list[ast.expr], kind: Callable[[Any], Any]) -> _Fn:
        items = [self.build(e) for e in elts]
        text = self.text

        def build(r: Resolver) -> Any:
            values = [i(r) for i in items]
            if sum(_weight(v) for v in values) > MAX_SIZE:
                raise ExpressionError(f"condition {text!r}: literal would hold over {MAX_SIZE:,} elements")
            try:
                return kind(values)
            except TypeError as exc:  # an unhashable set member
                raise ExpressionError(f"condition {text!r}: {exc}") from None

        return build

    def _List(self, node: ast.List) -> _Fn:
        return self._collection(node.elts, list)

    def _Tuple(self, node: ast.Tuple) -> _Fn:
        return self._collection(node.elts, tuple)

    def _Set(self, node: ast.Set) -> _Fn:
        return self._collection(node.elts, set)


def _short(value: Any) -> str:
    text = (
        repr(value)
        if not isinstance(value, (str, list, tuple, dict, set)) or _weight(value, 200) <= 200
        else ""
    )
    return text[:80] + "..." if len(text) > 80 else text or f"a {type(value).__name__}"


def _field(value: Any, key: Any) -> Any:
    """``value.key`` for dicts, lists (int index) and plain data attributes (no dunders, no methods)."""
    if isinstance(value, dict):
        try:
            return value.get(key, MISSING)
        except TypeError:  # an unhashable key
            return MISSING
    if isinstance(value, (list, tuple)) and isinstance(key, int) and not isinstance(key, bool):
        return value[key] if -len(value) <= key < len(value) else MISSING
    if isinstance(key, str) and not key.startswith("_") and not isinstance(value, (str, bytes, int, float)):
        found = getattr(value, key, MISSING)
        return MISSING if callable(found) else found
    return MISSING
