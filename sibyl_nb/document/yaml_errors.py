"""YAML mistakes said the way a person would say them, at the line where the mistake is.

libyaml and PyYAML report where *parsing* gave up ("while parsing a flow mapping ... did not find
expected ',' or '}'"), which is often lines after the mistake. Each translation below looks at the
text around both marks and names the thing the writer got wrong: ``line 6: this `{` is never
closed``. Anything not recognised keeps the parser's own words, cleaned up, with the line.
"""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from ..errors import SpecError, YAMLEncodingError, YAMLLimitError, YAMLSyntaxError

if TYPE_CHECKING:
    import yaml

__all__ = ["syntax_error", "bad_character", "bad_bytes"]

_CLOSER = {"{": "}", "[": "]"}
_CONTROL_NAMES = {
    "\x00": "NUL",
    "\x07": "BEL (bell)",
    "\x08": "BACKSPACE",
    "\x1b": "ESCAPE",
    "\x7f": "DELETE",
}


def bad_bytes(data: bytes, exc: UnicodeDecodeError, source: str) -> YAMLEncodingError:
    """A file that does not decode as UTF-8: name the encoding if it has a BOM, else the first bad byte."""
    for bom, name in (
        (b"\xff\xfe\x00\x00", "UTF-32"),
        (b"\x00\x00\xfe\xff", "UTF-32"),
        (b"\xff\xfe", "UTF-16"),
        (b"\xfe\xff", "UTF-16"),
    ):
        if data.startswith(bom):
            return YAMLEncodingError(
                f"the file is {name} encoded; save it as UTF-8 (YAML documents here are UTF-8)",
                line=1,
                source=source,
            )
    start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[start : exc.start].decode("utf-8", "replace")) + 1
    return YAMLEncodingError(
        f"byte 0x{data[exc.start]:02x} at column {column} is not UTF-8: save the file as UTF-8",
        line=line,
        source=source,
    )


def bad_character(text: str, index: int, source: str | None) -> YAMLEncodingError:
    """A control character (NUL, BEL, ...) or a lone surrogate somewhere in the text."""
    ch = text[index]
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    name = unicodedata.name(ch, "") or _CONTROL_NAMES.get(ch, "(a control character)")
    hint = ""
    if ch == "\x00" and text.count("\x00") * 3 >= len(text):
        hint = " (every other byte is NUL: is this a UTF-16 file? save it as UTF-8)"
    return YAMLEncodingError(
        f"character U+{ord(ch):04X} {name} at column {column}: a YAML document cannot contain control "
        f"characters{hint}",
        line=line,
        source=source,
    )


def syntax_error(exc: yaml.MarkedYAMLError, text: str, source: str | None) -> SpecError:
    """The parser's error in words, at the line of the mistake."""
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    pm, cm = exc.problem_mark, exc.context_mark
    lines = text.splitlines() or [""]

    def at(mark: yaml.Mark | None) -> str:
        if mark is None or mark.index >= len(text):
            return ""
        return text[mark.index]

    def line_of(mark: yaml.Mark | None) -> int | None:
        return mark.line + 1 if mark is not None else None

    def err(message: str, line: int | None, cls: type[SpecError] = YAMLSyntaxError) -> SpecError:
        return cls(message, line=line, source=source)

    if "maximum nesting depth" in problem:
        return err("nesting deeper than libyaml's 1000 levels", line_of(pm), YAMLLimitError)
    # -- unclosed brackets and quotes
    if "flow" in context and ("did not find expected" in problem or "expected ','" in problem):
        if cm is not None and at(cm) in _CLOSER:  # the context mark is the opener itself
            opener: tuple[str, int] | None = (at(cm), cm.index)
        else:
            opener = _unclosed_opener(text, pm.index if pm else len(text))
        if opener is not None:
            ch, idx = opener
            line = text.count("\n", 0, idx) + 1
            found = at(pm)
            if pm is None or pm.line + 1 > line or found == "":
                return err(f"this `{ch}` is never closed (expected `{_CLOSER[ch]}`)", line)
            if found in "]}":
                return err(
                    f"this `{ch}` is never closed: `{found}` at column {pm.column + 1} closes something else",
                    line,
                )
            return err(
                f"inside this `{ch} {_CLOSER[ch]}`, expected `,` or `{_CLOSER[ch]}` at column {pm.column + 1}, "
                f"found `{at(pm)}`",
                line,
            )
    if "quoted scalar" in context and "end of stream" in problem:
        return err(f"this quote {at(cm)} is never closed", line_of(cm))
    if "unknown escape" in problem and pm is not None:
        esc = text[pm.index : pm.index + 2] if at(pm) == "\\" else text[pm.index - 1 : pm.index + 1]
        return err(
            f"`{esc}` is not an escape YAML knows inside double quotes: use single quotes, or write `\\\\`",
            line_of(cm) or line_of(pm),
        )
    # -- characters
    if "cannot start any token" in problem and pm is not None:
        ch = at(pm)
        if ch == "\t":
            return err("a tab character: YAML indents with spaces, never tabs", line_of(pm))
        return err(
            f"a value cannot start with `{ch}` (column {pm.column + 1}): put the value in quotes",
            line_of(pm),
        )
    # -- colons and keys
    if "mapping values are not allowed" in problem and pm is not None:
        row = lines[pm.line] if pm.line < len(lines) else ""
        key_part = row[: pm.column].strip().lstrip("- ").strip()
        if key_part and " " not in key_part and ":" not in key_part and pm.line > 0:
            prev = _previous_content_line(lines, pm.line)
            if prev is not None and ":" not in lines[prev]:
                return err(
                    f"`{lines[prev].strip()}` has no `:` — write `key: value` (line {pm.line + 1} indents a "
                    f"key under it)",
                    prev + 1,
                )
        return err(
            f"a `: ` inside a value (column {pm.column + 1}): put the whole value in quotes, or fix this "
            f"line's indentation",
            pm.line + 1,
        )
    if "could not find expected ':'" in problem:
        row = lines[cm.line].strip() if cm is not None and cm.line < len(lines) else ""
        return err(f"`{row}` has no `:` — write `key: value`, or indent it under a key", line_of(cm))
    if context.startswith("while parsing a block") and pm is not None:
        ch = at(pm)
        if ch in ("]", "}"):
            return err(f"this `{ch}` closes nothing (no `{'[' if ch == ']' else '{'}` is open)", pm.line + 1)
        row = lines[pm.line] if pm.line < len(lines) else ""
        indent = len(row) - len(row.lstrip(" "))
        if pm.column > indent:  # something after a complete value on the same line
            return err(
                f"unexpected `{text[pm.index : pm.index + 20].splitlines()[0]}` after the value at "
                f"column {pm.column + 1}: quote the whole value, or put it on its own line",
                pm.line + 1,
            )
        if ch == ":":
            return err("a `:` with no key before it", pm.line + 1)
        where = cm.line + 1 if cm is not None else None
        if ch == "-" and cm is not None and pm.column == cm.column and "mapping" in context:
            return err(
                f"a list item `-` at the indentation of the keys above (line {where}): a list under a key "
                f"goes on the lines after `key:`, indented",
                pm.line + 1,
            )
        levels = _levels_above(lines, pm.line)
        choices = " or ".join(f"{col} (line {n})" for col, n in levels) or "0"
        return err(
            f"this line is indented {_spaces(indent)}, but the lines above it are indented {choices}: "
            f"line up each key (or `-` item) with the others of its mapping (or list)",
            pm.line + 1,
        )
    # -- documents, anchors, aliases
    if "undefined alias" in problem:
        name = _word(text, pm.index + 1) if pm is not None else ""
        return err(f"`*{name}` refers to no anchor: define `&{name}` before using it", line_of(pm))
    if "duplicate anchor" in context:
        name = _word(text, pm.index + 1) if pm is not None else ""
        return err(f"anchor `&{name}` is defined twice (first on line {line_of(cm)})", line_of(pm))
    if "single document" in context:
        return err("a second document (`---`): a pipeline file holds exactly one document", line_of(pm))
    if "directive" in context:
        return err(f"unknown directive `{lines[cm.line].strip()}`" if cm else problem, line_of(cm))
    words = "; ".join(p for p in (context, problem) if p)
    return err(f"invalid YAML: {words}", line_of(pm) or line_of(cm))


def _spaces(n: int) -> str:
    return f"{n} space" if n == 1 else f"{n} spaces"


def _levels_above(lines: list[str], index: int) -> list[tuple[int, int]]:
    """(indentation, 1-based line) of each enclosing level above line ``index``, innermost first."""
    out: list[tuple[int, int]] = []
    limit = 10**9
    for i in range(index - 1, -1, -1):
        row = lines[i]
        stripped = row.strip()
        if not stripped or stripped.startswith("#"):
            continue
        col = len(row) - len(row.lstrip(" "))
        rest = row[col:]
        while rest.startswith("- "):  # a key inside a list item sits after its dash
            col, rest = col + 2, rest[2:].lstrip(" ")
        if col < limit:
            out.append((col, i + 1))
            limit = col
            if col == 0:
                break
    return out


def _previous_content_line(lines: list[str], index: int) -> int | None:
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _word(text: str, index: int) -> str:
    end = index
    while end < len(text) and not text[end].isspace() and text[end] not in ",]}":
        end += 1
    return text[index:end]


def _unclosed_opener(text: str, upto: int) -> tuple[str, int] | None:
    """The innermost ``{``/``[`` still open at ``upto``, skipping quoted text and comments."""
    stack: list[tuple[str, int]] = []
    i, n = 0, min(upto, len(text))
    while i < n:
        c = text[i]
        if c in "\"'" and (stack or i == 0 or text[i - 1] in " \t\n:[{,-"):
            quote = c
            i += 1
            while i < n and text[i] != quote:
                i += 2 if quote == '"' and text[i] == "\\" else 1
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n"):
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{[" and (stack or i == 0 or text[i - 1] in " \t\n:-,"):
            stack.append((c, i))
        elif c in "}]" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else None
