"""Hostile and careless YAML: every one is a clear sibyl_nb error naming its line, in bounded time and memory.

The bombs run in a child interpreter with an address-space limit and a timeout, so a regression
shows as a failed test instead of a machine out of memory.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap

import pytest

import sibyl_nb as sb
from sibyl_nb.document.yaml_lines import load_yaml_with_lines
from sibyl_nb.document.yaml_load import MAX_DEPTH

MEMORY_LIMIT = 1 << 30  # 1 GiB of address space for the child (the bombs reached 4 GB)
TIME_LIMIT = 60  # seconds; a refusal takes milliseconds, the limit only catches a hang


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


CHILD = """
import json, sys, time
import sibyl_nb as sb
text = sys.stdin.read()
t0 = time.perf_counter()
try:
    sb.Pipeline.from_yaml(text)
    out = {"outcome": "loaded"}
except sb.SibylError as e:
    out = {"outcome": "error", "cls": type(e).__name__, "line": e.line, "message": e.message}
except BaseException as e:
    out = {"outcome": "raw", "cls": type(e).__name__, "message": str(e)[:300]}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""


def load_bounded(text: str) -> dict:
    """Load ``text`` in a child with 1 GiB of address space; what happened, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=text,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append(f"steps:\n  - use: workflow_orchestration.passthrough\n    config: {{x: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- alias bombs, recursion, depth
def test_billion_laughs_is_refused_before_expansion_naming_the_alias_line():
    text = billion_laughs()
    assert len(text) < 1024  # the 1 KB file that reached 4 GB
    out = load_bounded(text)
    assert out["outcome"] == "error", out
    assert out["cls"] == "YAMLLimitError"
    assert "alias" in out["message"] and "refused before expanding" in out["message"]
    assert out["line"] in range(2, 11), out  # a line that uses an alias of a huge list
    assert out["seconds"] < TIME_LIMIT


def test_merge_key_bomb_is_refused():
    lines = ["m0: &m0 {k0: 1, k1: 2}"]
    for i in range(1, 40):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], own{i}: {i}}}")
    lines.append("steps:\n  - use: workflow_orchestration.passthrough\n    config: {x: *m39}")
    out = load_bounded("\n".join(lines) + "\n")
    assert out["outcome"] == "error" and out["cls"] == "YAMLLimitError", out
    assert "alias" in out["message"]


@pytest.mark.parametrize(
    "text, line",
    [
        ("steps:\n  - use: workflow_orchestration.passthrough\n    config: &c\n      again: *c\n", 4),
        ("steps: &s\n  - use: workflow_orchestration.passthrough\n  - *s\n", 3),
        ("steps: &s [1, *s]\n", 1),
    ],
    ids=["mapping", "block-list", "flow-list"],
)
def test_recursive_alias_is_refused_at_its_line(text, line):
    out = load_bounded(text)
    assert out["outcome"] == "error" and out["cls"] == "YAMLLimitError", out
    assert "recursive alias" in out["message"]
    assert out["line"] == line


def test_nesting_deeper_than_the_limit_is_refused_at_the_line_that_crosses_it():
    block = "steps:\n  - use: workflow_orchestration.passthrough\n    config:\n"
    block += "".join("      " + "  " * i + f"k{i}:\n" for i in range(300)) + "      " + "  " * 300 + "v\n"
    out = load_bounded(block)
    assert out["outcome"] == "error" and out["cls"] == "YAMLLimitError", out
    assert f"deeper than {MAX_DEPTH}" in out["message"]
    # config is the mapping at depth 4 (line 4); the one at depth MAX_DEPTH + 1 starts on line MAX_DEPTH + 1
    assert out["line"] == MAX_DEPTH + 1


def test_flow_nesting_bomb_is_refused():
    out = load_bounded("steps: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert out["outcome"] == "error" and out["cls"] == "YAMLLimitError", out
    assert out["line"] == 1


def test_nesting_within_the_limit_and_ordinary_anchors_still_load():
    deep = "x: " + "[" * 60 + "1" + "]" * 60 + "\n"
    data, _ = load_yaml_with_lines(deep)
    inner = data["x"]
    for _ in range(59):
        inner = inner[0]
    assert inner == [1]
    text = textwrap.dedent(
        """\
        defaults: &d {top_k: 3, model: m}
        steps:
          - use: workflow_orchestration.passthrough
            config:
              <<: *d
              top_k: 5
          - use: workflow_orchestration.passthrough
            config: *d
        """
    )
    data, lines = load_yaml_with_lines(text)
    assert data["steps"][0]["config"] == {"top_k": 5, "model": "m"}  # the key written here wins
    assert data["steps"][1]["config"] == {"top_k": 3, "model": "m"}
    assert lines.line(("steps", 0, "config", "top_k")) == 6


def test_a_huge_integer_is_refused_with_its_line_and_path():
    text = "steps:\n  - use: workflow_orchestration.passthrough\n    config:\n      n: " + "9" * 10_000 + "\n"
    out = load_bounded(text)
    assert out["outcome"] == "error" and out["cls"] == "YAMLLimitError", out
    assert "10,000 digits" in out["message"]
    assert out["line"] == 4
    with pytest.raises(sb.SpecError) as err:
        load_yaml_with_lines(text)
    assert err.value.path == "steps[0].config.n"
    data, _ = load_yaml_with_lines("n: " + "9" * 50 + "\nq: '" + "9" * 10_000 + "'\n")
    assert data["n"] == int("9" * 50) and len(data["q"]) == 10_000  # quoted, it is text


def test_a_document_too_large_is_refused_without_parsing():
    with pytest.raises(sb.YAMLLimitError, match="characters"):
        load_yaml_with_lines("a: 1\n" + "#" * 10_000_001)


# ---------------------------------------------------------------------- encodings and characters
def test_utf16_file_is_refused_saying_so(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("steps:\n  - use: workflow_orchestration.passthrough\n", encoding="utf-16")
    with pytest.raises(sb.YAMLEncodingError, match="UTF-16") as err:
        sb.Pipeline.from_yaml(str(f))
    assert err.value.line == 1 and err.value.source == str(f)


def test_utf16_without_bom_is_refused_as_such(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes("steps:\n  - use: workflow_orchestration.passthrough\n".encode("utf-16-le"))
    with pytest.raises(sb.YAMLEncodingError, match="UTF-16"):
        sb.Pipeline.from_yaml(str(f))


def test_latin1_file_names_the_line_and_byte(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes("steps:\n  - use: workflow_orchestration.passthrough\n    id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(sb.YAMLEncodingError) as err:
        sb.Pipeline.from_yaml(str(f))
    assert err.value.line == 3
    assert "0xe9 at column 12 is not UTF-8" in err.value.message


@pytest.mark.parametrize(
    "char, name", [("\x00", "NUL"), ("\x07", "BEL"), ("\x1b", "ESCAPE"), ("\x7f", "DELETE"), ("\ud800", "")]
)
def test_nul_and_control_characters_are_refused_at_their_line(char, name):
    text = f"steps:\n  - use: workflow_orchestration.passthrough\n    id: a{char}b\n"
    with pytest.raises(sb.YAMLEncodingError) as err:
        sb.Pipeline.from_yaml(text)
    assert err.value.line == 3
    assert f"U+{ord(char):04X}" in err.value.message and name in err.value.message
    assert "column 10" in err.value.message


def test_tabs_newlines_and_unicode_text_are_fine():
    data, _ = load_yaml_with_lines('a: "x\\ty"\nb: "\tz"\nc: café ✓\r\nd: 1\n')
    assert data == {"a": "x\ty", "b": "\tz", "c": "café ✓", "d": 1}


# ---------------------------------------------------------------------- tags
@pytest.mark.parametrize(
    "value",
    ["!!python/object/apply:os.system [echo hi]", "!!python/name:os.system ''", "!foo bar", "!!set {a}"],
)
def test_object_building_tags_are_refused(value):
    text = f"steps:\n  - use: workflow_orchestration.passthrough\n    config:\n      x: {value}\n"
    with pytest.raises(sb.YAMLSyntaxError, match="is not allowed") as err:
        sb.Pipeline.from_yaml(text)
    assert err.value.line == 4
    assert err.value.path == "steps[0].config.x"


def test_standard_scalar_types_load_as_before():
    import datetime

    data, _ = load_yaml_with_lines(
        "a: 0x1F\nb: 1_000\nc: 1.5e+3\nd: .inf\ne: yes\nf: ~\ng: 2024-01-02\nh: -7\n"
    )
    assert data == {
        "a": 31,
        "b": 1000,
        "c": 1500.0,
        "d": float("inf"),
        "e": True,
        "f": None,
        "g": datetime.date(2024, 1, 2),
        "h": -7,
    }


# ---------------------------------------------------------------------- syntax errors in words
SYNTAX = [
    # (id, text, message fragment, line of the mistake)
    (
        "unclosed-brace",
        "steps:\n  - use: a\n    config: {top_k: 3, model: m\n  - use: b\n",
        "this `{` is never closed",
        3,
    ),
    ("unclosed-brace-at-end", "steps:\n  - use: a\n    config: {top_k: 3,\n", "this `{` is never closed", 3),
    ("unclosed-bracket", "steps:\n  - use: a\n    config: {x: [1, 2}\n", "this `[` is never closed", 3),
    ("unclosed-quote", 'steps:\n  - use: "a\n  - use: b\n', 'this quote " is never closed', 2),
    ("tab-indent", "steps:\n\t- use: a\n", "a tab character", 2),
    ("colon-in-value", "steps:\n  - use: a\n    prompt: answer: this\n", "put the whole value in quotes", 3),
    ("missing-colon", "steps:\n  - use a\n    id: x\n", "`- use a` has no `:`", 2),
    ("key-without-colon", "steps:\n  - use: a\nnotes\nother: 1\n", "`notes` has no `:`", 3),
    ("bad-indentation", "steps:\n  - use: a\n   config: {}\n", "indented 3 spaces", 3),
    ("bad-dedent", "steps:\n  - use: a\n    config:\n      a: 1\n     b: 2\n", "indented 5 spaces", 5),
    ("stray-bracket", "steps: [1, 2]]\n", "this `]` closes nothing", 1),
    ("text-after-quote", 'steps:\n  - use: "a" b\n', "unexpected `b` after the value", 2),
    (
        "list-item-among-keys",
        "steps:\n  - use: a\nid: x\n- use: b\n",
        "a list item `-` at the indentation",
        4,
    ),
    ("undefined-alias", "steps:\n  - use: a\n    config: *defaults\n", "`*defaults` refers to no anchor", 3),
    (
        "duplicate-anchor",
        "a: &x 1\nb: &x 2\nsteps: []\n",
        "anchor `&x` is defined twice (first on line 1)",
        2,
    ),
    ("two-documents", "steps: []\n---\nsteps: []\n", "a second document", 2),
    ("unknown-escape", 'steps:\n  - use: a\n    id: "c:\\qux"\n', "`\\q` is not an escape", 3),
    ("reserved-character", "steps:\n  - use: @here\n", "cannot start with `@`", 2),
    ("duplicate-key", "steps:\n  - use: a\n    use: b\n", "duplicate key 'use'", 3),
]


@pytest.mark.parametrize("case", SYNTAX, ids=[c[0] for c in SYNTAX])
def test_syntax_errors_read_as_a_person_would_say_them(case):
    _id, text, fragment, line = case
    with pytest.raises(sb.SpecError) as err:
        sb.Pipeline.from_yaml(text)
    e = err.value
    assert fragment in e.message, e.message
    assert e.line == line, (e.line, str(e))
    assert str(e).startswith(f"<yaml>:{line}: ")
    for jargon in ("while parsing", "while scanning", "<block end>", "did not find expected"):
        assert jargon not in e.message


def test_every_hostile_case_is_a_spec_error_subclass_never_a_raw_exception():
    hostile = [c[1] for c in SYNTAX] + [
        billion_laughs(4, 4),
        "a: &a [*a]\n",
        "x: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
        "n: " + "1" * 5000 + "\n",
        "a: \x00\n",
        "a: !!binary '%%%'\n",
        "a: !!timestamp 2024-13-45\n",
        "? [a, b]\n: 1\n",
        "<<: 3\n",
        "",
        "---\n...\n",
    ]
    for text in hostile:
        try:
            sb.Pipeline.from_yaml(text)
        except sb.SpecError:
            continue
        except Exception as exc:  # pragma: no cover - the failure report
            raise AssertionError(f"{text[:60]!r}: raw {type(exc).__name__}: {exc}") from exc
