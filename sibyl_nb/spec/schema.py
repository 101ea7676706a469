"""Small declarative checks for document sections: allowed keys (with "did you mean") and types."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from ..errors import SpecError
from .yaml_lines import LineMap, Path

__all__ = [
    "check_keys",
    "check_type",
    "expect_mapping",
    "expect_list",
    "did_you_mean",
    "TYPE_NAMES",
    "check_schema",
]

TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def did_you_mean(name: str, options: Iterable[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ""


def check_keys(data: dict[str, Any], allowed: Iterable[str], path: Path, lines: LineMap, what: str) -> None:
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise lines.error(
                path + (key,),
                f"unknown key '{key}' in {what}{did_you_mean(key, allowed)} (allowed: {', '.join(allowed)})",
            )


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return TYPE_NAMES.get(t, getattr(t, "__name__", str(t)))


def check_type(value: Any, expected: Any, path: Path, lines: LineMap, what: str = "") -> None:
    """``expected``: a type, a tuple of types, or a list/tuple of allowed string values."""
    if isinstance(value, str) and "${" in value:
        return  # rendered at run time
    if isinstance(expected, (list, tuple)) and expected and all(isinstance(x, str) for x in expected):
        if value not in expected:
            raise lines.error(
                path,
                f"{what or 'value'} {value!r} is not one of: {', '.join(map(str, expected))}"
                f"{did_you_mean(str(value), expected)}",
            )
        return
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types and int not in types:
        types = types + (int,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise lines.error(
            path, f"{what or 'value'} must be {_type_name(expected)}, got {type(value).__name__} {value!r}"
        )


def check_schema(
    config: dict[str, Any], schema: dict[str, Any], path: Path, lines: LineMap, what: str
) -> None:
    """Type-check known keys; an unknown key that looks like a typo of a known one is an error."""
    for key, value in config.items():
        if key in schema:
            if value is not None:
                check_type(value, schema[key], path + (key,), lines, f"{what} '{key}'")
        elif schema:
            hint = did_you_mean(key, schema, cutoff=0.8)
            if hint:
                raise lines.error(path + (key,), f"unknown {what} key '{key}'{hint}")


def expect_mapping(value: Any, path: Path, lines: LineMap, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise lines.error(path, f"{what} must be a mapping, got {type(value).__name__}")
    return value


def expect_list(value: Any, path: Path, lines: LineMap, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise lines.error(path, f"{what} must be a list, got {type(value).__name__}")
    return value


def fail(lines: LineMap, path: Path, message: str) -> SpecError:
    return lines.error(path, message)
