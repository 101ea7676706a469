"""``%%sibyl_pipeline`` / ``%sibyl_pipeline`` through a real IPython ``InteractiveShell``.

What matters most: a bad cell *fails* (``error_in_exec`` set, never a ``UsageError``, which notebook
runners count as a pass) and says what is wrong in one line, with the cell's own line number.
"""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.testing.globalipapp import start_ipython

import sibyl_nb as sb
from sibyl_nb.notebook.magics import SibylMagicError, _without_cache, get_magic

CALLS: list[str] = []


@sb.technique("magic_test.shout")
def _shout(ctx):
    CALLS.append(ctx.node_id)
    inp = ctx.input if isinstance(ctx.input, dict) else {"message": ctx.input}
    return {
        "text": str(inp.get("message", "")).upper() + ctx.config.get("suffix", ""),
        "session": inp.get("session_id"),
    }


@sb.technique("magic_test.boom")
def _boom(ctx):
    raise ValueError("kaboom")


@pytest.fixture
def ip():
    shell = start_ipython() or InteractiveShell.instance()
    shell.run_cell("%load_ext sibyl_nb", store_history=False)
    magic = get_magic(shell)
    assert magic is not None
    magic.pipelines.clear()
    magic.last_defined = None
    for key in ("show", "autodisplay", "live", "interval", "preview_width", "short_errors"):
        magic.set_trait(key, magic.trait_defaults(key))
    CALLS.clear()
    shell.user_ns["q"] = {"message": "hello"}
    yield shell


def cell(ip, text: str):
    return ip.run_cell(text, store_history=False)


def assert_fails(result, cls=sb.SibylError, text: str | None = None):
    err = result.error_in_exec or result.error_before_exec
    assert err is not None, "the cell should have failed"
    assert not isinstance(err, UsageError)
    assert isinstance(err, cls), repr(err)
    assert result.success is False
    if text is not None:
        assert text in str(err), str(err)
    return err


HELLO = """%%sibyl_pipeline -i q -o res
pipelines:
  hello:
    steps:
      - use: magic_test.shout
        config: {suffix: "!"}
"""


def test_registers_line_and_cell_magic_with_help(ip):
    assert ip.find_cell_magic("sibyl_pipeline") is not None
    assert ip.find_line_magic("sibyl_pipeline") is not None
    doc = ip.find_cell_magic("sibyl_pipeline").__doc__
    for flag in ("--pipeline", "--input", "--session", "--show", "--output", "--dry-run", "--no-cache"):
        assert flag in doc
    info = ip.object_inspect("%%sibyl_pipeline")
    assert info["found"] and "--dry-run" in (info.get("docstring") or "")


def test_cell_runs_and_stores_result(ip):
    r = cell(ip, HELLO)
    assert r.success, r.error_in_exec
    res = ip.user_ns["res"]
    assert isinstance(res, sb.RunResult)
    assert res.output["text"] == "HELLO!"
    assert res.stopped_by == "completed"


def test_technique_from_an_earlier_cell(ip):
    r = cell(
        ip,
        "import sibyl_nb as sb\n@sb.technique('magic_test.fresh')\ndef fresh(ctx):\n"
        "    return {'text': 'fresh ' + ctx.input['message']}\n",
    )
    assert r.success
    r = cell(ip, "%%sibyl_pipeline -i q -o res\nsteps:\n  - use: magic_test.fresh\n")
    assert r.success, r.error_in_exec
    assert ip.user_ns["res"].output == {"text": "fresh hello"}


def test_line_form_runs_a_defined_pipeline_with_inline_json(ip):
    assert cell(ip, HELLO).success
    r = cell(ip, """%sibyl_pipeline hello -i '{"message": "again"}' -o r2""")
    assert r.success, r.error_in_exec
    assert ip.user_ns["r2"].output["text"] == "AGAIN!"
    r = cell(ip, """%sibyl_pipeline -p hello -i "plain words" -o r3""")
    assert r.success, r.error_in_exec
    assert ip.user_ns["r3"].input == "plain words"
    # no name: the last pipeline defined
    r = cell(ip, "%sibyl_pipeline -i q -o r4")
    assert r.success and ip.user_ns["r4"].pipeline == "hello"


def test_line_form_accepts_a_pipeline_variable(ip):
    ip.user_ns["mine"] = sb.Pipeline.from_yaml("steps:\n  - use: magic_test.shout\n", name="mine")
    r = cell(ip, "%sibyl_pipeline mine -i q -o r5")
    assert r.success, r.error_in_exec
    assert ip.user_ns["r5"].output["text"] == "HELLO"


def test_session_flag_reaches_the_input(ip):
    r = cell(ip, "%%sibyl_pipeline -i q -s user_42 -o res\nsteps:\n  - use: magic_test.shout\n")
    assert r.success, r.error_in_exec
    assert ip.user_ns["res"].output["session"] == "user_42"


def test_dry_run_validates_without_running(ip):
    r = cell(
        ip, "%%sibyl_pipeline --dry-run -o p\npipelines:\n  dry:\n    steps:\n      - use: magic_test.shout\n"
    )
    assert r.success, r.error_in_exec
    assert CALLS == []
    assert isinstance(ip.user_ns["p"], sb.Pipeline)
    from sibyl_nb.notebook.display import result_bundle

    bundle = result_bundle(ip.user_ns["p"])
    assert "<svg" in bundle["text/html"] and "sibyl-graph" in bundle["text/html"]


def test_several_pipelines_are_defined_then_run_by_name(ip, capsys):
    r = cell(
        ip,
        "%%sibyl_pipeline\npipelines:\n  a:\n    steps:\n      - use: magic_test.shout\n"
        "  b:\n    steps:\n      - use: magic_test.shout\n        config: {suffix: '?'}\n",
    )
    assert r.success, r.error_in_exec
    assert CALLS == []
    assert "defined pipelines a, b" in capsys.readouterr().out
    r = cell(ip, "%sibyl_pipeline b -i q -o rb")
    assert r.success and ip.user_ns["rb"].output["text"] == "HELLO?"
    r = cell(
        ip, "%%sibyl_pipeline -p a -i q -o ra\npipelines:\n  a:\n    steps:\n      - use: magic_test.shout\n"
    )
    assert r.success and ip.user_ns["ra"].output["text"] == "HELLO"


# ---------------------------------------------------------------------- errors fail the cell
def test_unknown_technique_fails_with_cell_line(ip):
    r = cell(ip, "%%sibyl_pipeline -i q\npipelines:\n  bad:\n    steps:\n      - use: magic_test.shuot\n")
    err = assert_fails(r, sb.UnknownTechniqueError, "cell:5: pipelines.bad.steps[0].use")
    assert "did you mean 'magic_test.shout'" in str(err)


def test_yaml_syntax_error_line_is_relative_to_the_cell(ip):
    r = cell(ip, "%%sibyl_pipeline\nsteps:\n  - use: magic_test.shout\n    config: [unclosed\n")
    err = assert_fails(r, sb.SpecError, "cell:")
    assert err.line is not None and err.line >= 4


def test_error_shows_one_line(ip, capsys):
    cell(ip, "%%sibyl_pipeline -i q\nsteps:\n  - use: magic_test.nope\n")
    out = capsys.readouterr()
    shown = [line for line in (out.out + out.err).splitlines() if line.strip()]
    assert len(shown) == 1 and shown[0].startswith("UnknownTechniqueError: cell:3"), shown


def test_bad_flag_is_not_a_usage_error(ip):
    assert_fails(cell(ip, "%sibyl_pipeline --bogus"), SibylMagicError, "unrecognized arguments")


@pytest.mark.parametrize(
    "line, text",
    [
        ("%sibyl_pipeline nothing_here", "no pipeline named 'nothing_here'"),
        ("%sibyl_pipeline hello -i missing_var", "no variable with that name"),
        ("%sibyl_pipeline hello -i '{\"broken\": }'", "neither a variable name nor valid JSON"),
        ("%sibyl_pipeline hello --show graph,colour", "unknown view 'colour'"),
    ],
)
def test_usage_problems_fail_in_one_line(ip, line, text):
    assert cell(ip, HELLO).success
    assert_fails(cell(ip, line), SibylMagicError, text)


def test_missing_input_fails(ip):
    r = cell(ip, "%%sibyl_pipeline\nsteps:\n  - use: magic_test.shout\n    config: {suffix: '${topic}'}\n")
    assert_fails(r, sb.SibylError, "topic")


def test_failing_node_fails_the_cell_and_keeps_partial_result(ip):
    r = cell(
        ip, "%%sibyl_pipeline -i q -o res\nsteps:\n  - use: magic_test.shout\n  - use: magic_test.boom\n"
    )
    err = assert_fails(r, sb.NodeExecutionError, "kaboom")
    assert "cell:4" in str(err) and "node 'boom'" in str(err)
    res = ip.user_ns["res"]
    assert res.stopped_by == "failed" and res.status("shout") == "ran" and res.status("boom") == "failed"


def test_empty_cell_fails(ip):
    assert_fails(cell(ip, "%%sibyl_pipeline\n\n"), SibylMagicError, "empty")


# ---------------------------------------------------------------------- options and display
def test_config_options(ip):
    assert cell(ip, "%config SibylMagic.show = 'steps'").success
    assert cell(ip, "%config SibylMagic.interval = 0.05").success
    magic = get_magic(ip)
    assert magic.show == "steps" and magic.interval == 0.05
    assert cell(ip, HELLO).success


def test_autodisplay_off_returns_the_result(ip):
    assert cell(ip, "%config SibylMagic.autodisplay = False").success
    r = ip.run_cell(HELLO.replace(" -o res", ""), store_history=True)
    assert r.success and isinstance(r.result, sb.RunResult)


def test_result_displays_as_static_html(ip):
    r = cell(ip, HELLO)
    assert r.success, r.error_in_exec
    from sibyl_nb.notebook.display import result_bundle

    html = result_bundle(ip.user_ns["res"])["text/html"]
    assert "sibyl-graph" in html and "sibyl-tokens" in html and "sibyl-steps" in html and "HELLO!" in html
    assert "<script" not in html
    assert re.findall(r'<img[^>]* src="([a-z]+):', html) == ["data"]  # the graph's copy, inline


def test_no_cache_flag(ip):
    r = cell(ip, HELLO.replace("-o res", "-o res --no-cache"))
    assert r.success, r.error_in_exec
    pipe = get_magic(ip).pipelines["hello"]
    clone = _without_cache(pipe)
    assert clone.document.infrastructure["caching"]["enabled"] is False and clone.no_cache is True
    assert "caching" not in (pipe.document.infrastructure or {})  # the original is untouched


def test_no_cache_bypasses_the_step_cache(ip):
    cached = (
        "%%sibyl_pipeline -i q -o c1{flag}\nshops:\n  infrastructure:\n    config:\n      caching:\n"
        "        enabled: true\npipelines:\n  cached_hello:\n    steps:\n      - use: magic_test.shout\n"
    )
    assert cell(ip, cached.format(flag="")).success
    assert cell(ip, "%sibyl_pipeline cached_hello -i q -o c2").success
    assert ip.user_ns["c2"].status("shout") == "cached"
    assert cell(ip, "%sibyl_pipeline cached_hello -i q -o c3 --no-cache").success
    assert ip.user_ns["c3"].status("shout") == "ran"
    assert ip.user_ns["c3"].output == ip.user_ns["c2"].output
