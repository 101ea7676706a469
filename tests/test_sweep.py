"""sb.sweep from outside: a document written here, techniques that count their calls, exact outcomes."""

from __future__ import annotations

import collections
import json
import re

import pandas as pd
import pytest

import sibyl_nb as sb
from sibyl_nb.experiments.grid import GridError
from sibyl_nb.providers.base import Completion

CALLS: collections.Counter[tuple] = collections.Counter()


@sb.technique("sweeptest.prefix", blocking=False, config_schema={"word": str})
def _prefix(ctx):
    CALLS["prefix", ctx.input["query"], ctx.config.get("word")] += 1
    return {"text": f"{ctx.config.get('word', '')} {ctx.input['query']}".strip()}


@sb.technique("sweeptest.repeat", blocking=False, config_schema={"times": int})
def _repeat(ctx):
    (up,) = ctx.upstream.values()
    CALLS["repeat", up["text"], ctx.config["times"]] += 1
    return {"text": " ".join([up["text"]] * ctx.config["times"])}


@sb.technique("sweeptest.shout", blocking=False, config_schema={"mark": str})
def _shout(ctx):
    (up,) = ctx.upstream.values()
    CALLS["shout", up["text"], ctx.config["mark"]] += 1
    return {"answer": up["text"].upper() + ctx.config["mark"]}


DOC = """
pipelines:
  chain:
    steps:
      - id: prefix
        use: sweeptest.prefix
        config: {word: say}
      - id: repeat
        use: sweeptest.repeat
        config: {times: 1}
      - id: shout
        use: sweeptest.shout
        config: {mark: "!"}
"""
INPUTS = [{"query": "a"}, {"query": "bb"}, {"query": "ccc"}]
GRID = {"repeat.config.times": [1, 2], "shout.config.mark": ["!", "?"]}


def length(output, input, record):
    return len(output["answer"])


def expected_answer(query: str, times: int, mark: str) -> str:
    return " ".join([f"say {query}"] * times).upper() + mark


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SIBYL_HOME", str(tmp_path))
    CALLS.clear()
    return tmp_path


def run(grid=GRID, doc=DOC, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("name", "chain_test")
    return sb.sweep(sb.Pipeline.from_yaml(doc), INPUTS, grid, [length, sb.metrics.contains("SAY")], **kw)


def test_three_inputs_by_two_by_two_grid_gives_twelve_rows_with_the_right_values(home):
    df = run(max_concurrent=4)
    assert len(df) == 12
    assert list(df.columns[:5]) == ["input_id", "input", "repeat", "repeat.config.times", "shout.config.mark"]
    got = {(r.input, r["repeat.config.times"], r["shout.config.mark"]): r for _, r in df.iterrows()}
    assert len(got) == 12
    for q in ("a", "bb", "ccc"):
        for times in (1, 2):
            for mark in ("!", "?"):
                row = got[q, times, mark]
                want = expected_answer(q, times, mark)
                assert row.output == want
                assert row.length == len(want)
                assert bool(row["contains[SAY]"]) is True
                assert row.status == "ok" and row.error is None
    # rows in (input, setting) order; per-step timings and run facts are columns
    assert list(df.input) == ["a"] * 4 + ["bb"] * 4 + ["ccc"] * 4
    assert {"latency_ms", "tokens_in", "tokens_out", "cache_hits", "time_ms.prefix", "time_ms.shout"} <= set(
        df.columns
    )


def test_rerun_with_nothing_changed_makes_no_call_and_is_identical(home):
    first = run(max_concurrent=4)
    CALLS.clear()
    second = run(max_concurrent=4)
    assert sum(CALLS.values()) == 0
    pd.testing.assert_frame_equal(first, second)


def test_changing_one_grid_value_reruns_exactly_the_affected_cells(home):
    run(max_concurrent=1)
    CALLS.clear()
    df = run({"repeat.config.times": [1, 3], "shout.config.mark": ["!", "?"]}, max_concurrent=1)
    # prefix is upstream of the change: served from the step cache; repeat runs once per input (the
    # second mark hits its cache); shout runs for each affected (input, mark)
    assert (
        collections.Counter(
            {("repeat", f"say {q}", 3): 1 for q in ("a", "bb", "ccc")}
            | {("shout", " ".join([f"say {q}"] * 3), m): 1 for q in ("a", "bb", "ccc") for m in "!?"}
        )
        == CALLS
    )
    assert set(df[df["repeat.config.times"] == 3].output) == {
        expected_answer(q, 3, m) for q in ("a", "bb", "ccc") for m in "!?"
    }


def test_changing_one_nodes_config_reruns_that_node_and_downstream_only(home):
    run(max_concurrent=1)
    CALLS.clear()
    df = run(doc=DOC.replace("config: {word: say}", "config: {word: tell}"), max_concurrent=1)
    ran_nodes = collections.Counter(k[0] for k in CALLS.elements())
    assert ran_nodes == {"prefix": 3, "repeat": 6, "shout": 12}
    assert df.output.iloc[0] == "TELL A!"
    CALLS.clear()
    df2 = run(grid={"repeat.config.times": [1, 2], "shout.config.mark": ["!", "#"]}, max_concurrent=1)
    assert {k[0] for k in CALLS} == {"shout"} and sum(CALLS.values()) == 6
    assert len(df2) == 12


def test_grid_key_naming_no_node_or_no_config_key_is_an_error_naming_it(home):
    with pytest.raises(
        GridError,
        match=r"grid key 'shuot.config.mark': pipeline 'chain' has no node 'shuot'; did you mean 'shout'",
    ):
        run({"shuot.config.mark": ["!"]})
    with pytest.raises(
        GridError,
        match=r"grid key 'shout.config.marks': node 'shout' \(sweeptest.shout\) has no config key 'marks'",
    ):
        run({"shout.config.marks": ["!"]})
    with pytest.raises(GridError, match=r"grid key 'shout.mark'"):
        run({"shout.mark": ["!"]})
    with pytest.raises(GridError, match=r"grid setting repeat.config.times='two'.*must be an integer"):
        run({"repeat.config.times": ["two"]})
    assert sum(CALLS.values()) == 0


def test_failures_are_rows_with_their_error(home):
    df = sb.sweep(
        sb.Pipeline.from_yaml(DOC), INPUTS + [{"q": 1}], progress=False, name="fails", metrics=[length]
    )
    assert list(df.status) == ["ok", "ok", "ok", "failed"]
    assert "query" in df.error.iloc[3]
    assert pd.isna(df.length.iloc[3])


def test_manifest_round_trips_and_load_sweep_rebuilds_the_frame(home):
    df = run(max_concurrent=2)
    manifest = json.loads((home / "sweeps" / "chain_test" / "manifest.json").read_text())
    assert manifest["pipeline"] == "chain"
    assert manifest["grid"] == {"repeat.config.times": [1, 2], "shout.config.mark": ["!", "?"]}
    assert manifest["inputs"] == INPUTS and manifest["seed"] == 0 and manifest["repeats"] == 1
    assert manifest["packages"]["sibyl_nb"] == sb.__version__ and "pandas" in manifest["packages"]
    assert manifest["providers"]["primary"]["class"] == "LocalProvider"
    assert len(manifest["settings"]) == 4 and len({s["hash"] for s in manifest["settings"]}) == 4
    assert manifest["settings"][3]["nodes"]["shout"]["config"] == {"mark": "?"}
    assert [m["name"] for m in manifest["metrics"]] == ["length", "contains[SAY]"]
    loaded = sb.load_sweep("chain_test")
    pd.testing.assert_frame_equal(df, loaded)
    # every run's record carries its own manifest: the entries of the sweep's that made its key
    lines = (home / "sweeps" / "chain_test" / "cells.jsonl").read_text().splitlines()
    records = {json.loads(x)["record"]["run_id"]: json.loads(x)["record"] for x in lines}
    last = records[df.run_id.iloc[11]]["manifest"]
    assert last == {
        "sweep": "chain_test", "setting": 3, "setting_hash": manifest["settings"][3]["hash"],
        "params": {"repeat.config.times": 2, "shout.config.mark": "?"}, "environment": last["environment"],
        "input_id": 2, "repeat": 0, "seed": 0, "run_id": df.run_id.iloc[11],
    }  # fmt: skip


class CountingProvider:
    name = "counting"
    model = "count-1"

    def __init__(self):
        self.calls = 0

    async def complete(self, messages, **params):
        self.calls += 1
        return Completion(text="Score: 7/10", usage={"prompt_tokens": 3, "completion_tokens": 2})


def test_llm_judge_through_a_provider_is_not_called_again_on_rerun(home):
    provider = CountingProvider()
    sb.register_provider("counting_judge", provider)
    judge = sb.metrics.llm_judge("brevity", provider="counting_judge")
    pipe = sb.Pipeline.from_yaml(DOC)
    df = sb.sweep(pipe, INPUTS, metrics=[judge], progress=False, name="judged")
    assert list(df.judge) == [0.7, 0.7, 0.7] and provider.calls == 3
    again = sb.sweep(pipe, INPUTS, metrics=[judge], progress=False, name="judged")
    assert provider.calls == 3
    pd.testing.assert_frame_equal(df, again)


def test_local_llm_judge_scores_a_grounded_answer_above_an_unrelated_one():
    import asyncio

    judge = sb.metrics.llm_judge("correctness")
    question = {"query": "What is Python used for?"}
    good = asyncio.run(
        judge({"answer": "Python is used for web development, data science and automation."}, question, None)
    )
    bad = asyncio.run(judge({"answer": "I like turtles."}, question, None))
    assert 0.0 <= bad < good <= 1.0
    assert asyncio.run(judge({"answer": "I like turtles."}, question, None)) == bad


def test_local_llm_judge_is_deterministic(home):
    judge = sb.metrics.llm_judge()
    pipe = sb.Pipeline.from_yaml(DOC)
    a = sb.sweep(pipe, INPUTS, metrics=[judge], progress=False, store=False)
    b = sb.sweep(pipe, INPUTS, metrics=[judge], progress=False, store=False)
    assert a.judge.notna().all() and list(a.judge) == list(b.judge)
    assert ((a.judge >= 0) & (a.judge <= 1)).all()


def test_diff_names_the_changed_node(home):
    df = run(max_concurrent=1)
    # rows 0 and 2: same input and mark, times 1 vs 2 -> repeat's config changed, shout's input and output followed
    d = sb.diff_runs(df.sibyl.result(0), df.sibyl.result(2))
    assert d.nodes_where("config") == ["repeat"]
    assert d.changed_nodes == ["repeat", "shout"]
    assert d.loc["repeat", "changed"] == "config, output"
    assert d.loc["shout", "changed"] == "input, output"
    assert d.loc["repeat", "config_change"] == "times: 1 → 2"
    assert d.loc["shout", "output_b"] == '{"answer":"SAY A SAY A!"}'
    html = d._repr_html_()
    assert "2 node(s) differ" in html and "<b>repeat</b>" in html
    # two live runs of edited documents diff the same way
    a = sb.Pipeline.from_yaml(DOC).run({"query": "x"})
    b = sb.Pipeline.from_yaml(DOC.replace('mark: "!"', 'mark: "?"')).run({"query": "x"})
    assert sb.diff_runs(a, b).changed_nodes == ["shout"]
    assert sb.diff_runs(df.iloc[0], df.iloc[1]).nodes_where("config") == ["shout"]


def test_a_killed_sweep_continues_where_it_stopped(home, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("KILLTEST_CALLS", str(calls))
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    child = subprocess.Popen([sys.executable, str(here / "sweep_kill_child.py")], env=env)
    cells = home / "sweeps" / "killed" / "cells.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if cells.exists() and len(cells.read_text().splitlines()) >= 2:
                break
            assert child.poll() is None, "the child sweep ended before it was killed"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    stored = [
        json.loads(line)["record"]["output"]["answer"]
        for line in cells.read_text().splitlines()
        if line.strip()
    ]
    assert 2 <= len(stored) < 6
    before = calls.read_text().split()

    import sweep_kill_child

    df = sweep_kill_child.sweep()
    after = calls.read_text().split()[len(before) :]
    assert list(df.output) == [f"Q{i}" for i in range(6)]
    assert after == [f"q{i}" for i in range(len(stored), 6)]  # only the runs that had not finished
    assert list(df.status) == ["ok"] * 6


def test_plot_draws_metric_by_parameter_with_readable_labels(home):
    import matplotlib

    matplotlib.use("Agg")
    df = run(max_concurrent=2)
    ax = df.sibyl.plot("length", kind="bar")
    assert ax.get_xlabel() == "repeat · times"
    assert ax.get_ylabel() == "length"
    assert ax.get_title() == "length by repeat · times"
    assert ax.get_legend().get_title().get_text() == "shout · mark"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    # bar heights: mean length over the three inputs, per (times, mark)
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    want = sorted(
        round(sum(len(expected_answer(q, t, m)) for q in ("a", "bb", "ccc")) / 3, 6)
        for t in (1, 2)
        for m in "!?"
    )
    assert heights == want
    axes = df.sibyl.plot(["length", "contains[SAY]"], kind="line")
    assert [a.get_title() for a in axes] == ["length by repeat · times", "contains[SAY] by repeat · times"]


def test_live_table_fills_in_as_runs_finish(home, monkeypatch):
    import IPython.display

    import sibyl_nb.experiments.live as live

    shown: list[str] = []

    class Handle:
        def update(self, obj):
            shown.append(obj.data)

    def fake_display(obj, display_id=False):
        shown.append(obj.data)
        return Handle()

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(live, "INTERVAL", 0.0)
    df = run(max_concurrent=1, live=True)
    heads = [s.split("</div>")[0] for s in shown]
    counts = [int(re.search(r"(\d+)/12", h).group(1)) for h in heads]
    assert counts[0] == 0 and counts[-1] == 12
    assert counts == sorted(counts) and len(set(counts)) == 13  # a repaint per finished run
    assert shown[-1].count("<tr>") == len(df)  # the last paint: every row


def test_import_sibyl_nb_stays_light_with_the_sweep_exports():
    import subprocess
    import sys

    code = (
        "import sys, sibyl_nb as sb; sb.sweep; sb.load_sweep; sb.metrics.contains; "
        "print(sorted(m for m in ('pandas', 'matplotlib', 'IPython', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("store", [True, False])
def test_settings_share_the_nodes_no_grid_key_changes_even_when_runs_overlap(home, store):
    df = run(max_concurrent=8, store=store)
    # 4 settings per input run concurrently, yet 'prefix' (upstream of every grid key) runs once per input
    assert {k: v for k, v in CALLS.items() if k[0] == "prefix"} == {
        ("prefix", q, "say"): 1 for q in ("a", "bb", "ccc")
    }
    assert sum(v for k, v in CALLS.items() if k[0] == "shout") == 12
    leaders = df.index[::4]  # the first setting of each input computed 'prefix'; the others read it
    assert list(df.cache_hits[leaders]) == [0, 0, 0]
    assert (df.cache_hits.drop(index=leaders) >= 1).all()


class CountingAnswerer:
    name = "counting_answerer"
    model = "count-2"

    def __init__(self):
        self.calls = 0

    async def complete(self, messages, **params):
        self.calls += 1
        return Completion(text="forty-two", usage={"prompt_tokens": 5, "completion_tokens": 1})


ASK = """
pipelines:
  ask:
    steps:
      - id: ask
        use: ai_generation.generation
        cache: false
        config: {provider: counting_answerer}
      - id: shout
        use: sweeptest.shout
        config: {mark: "!"}
"""


def test_a_step_that_runs_again_replays_its_provider_calls(home):
    provider = CountingAnswerer()
    sb.register_provider("counting_answerer", provider)
    pipe = sb.Pipeline.from_yaml(ASK)
    first = sb.sweep(pipe, INPUTS, {"shout.config.mark": ["!"]}, progress=False, name="asked")
    assert provider.calls == 3 and list(first.output) == ["FORTY-TWO!"] * 3
    df = sb.sweep(pipe, INPUTS, {"shout.config.mark": ["!", "?"]}, progress=False, name="asked")
    # the new cells ran 'ask' again (cache: false) but its model call was answered from the recording
    assert provider.calls == 3
    assert list(df.output) == ["FORTY-TWO!", "FORTY-TWO?"] * 3
    assert df.attrs["sibyl_sweep"]["ran"] == 3
    assert sb.get_provider("counting_answerer") is provider  # the user's registry is untouched
    assert pipe.run({"query": "x"}).outputs["ask"]["text"] == "forty-two" and provider.calls == 4


def test_repeats_are_independent_samples_of_a_provider(home):
    class Dice:
        name = "dice"
        model = "dice-1"

        def __init__(self):
            self.calls = 0

        async def complete(self, messages, **params):
            self.calls += 1
            return Completion(text=f"roll {self.calls}")

    dice = Dice()
    sb.register_provider("dice_answerer", dice)
    pipe = sb.Pipeline.from_yaml(ASK.replace("counting_answerer", "dice_answerer"))
    df = sb.sweep(pipe, INPUTS[:1], repeats=3, progress=False, name="dice", max_concurrent=1)
    assert list(df.repeat) == [0, 1, 2]
    assert list(df.output) == ["ROLL 1!", "ROLL 2!", "ROLL 3!"]  # no repeat replays another's answer
    again = sb.sweep(pipe, INPUTS[:1], repeats=3, progress=False, name="dice", max_concurrent=1)
    assert dice.calls == 3 and list(again.output) == list(df.output)


def test_each_distinct_setting_compiles_once_and_a_rerun_compiles_nothing(home, monkeypatch):
    import sibyl_nb.document.compile as compile_module

    compiled: list[tuple[int, str]] = []
    real = compile_module.compile_document

    def counting(data, *args, **kwargs):
        steps = data["pipelines"]["chain"]["steps"]
        compiled.append((steps[1]["config"]["times"], steps[2]["config"]["mark"]))
        return real(data, *args, **kwargs)

    pipe = sb.Pipeline.from_yaml(DOC)
    monkeypatch.setattr(compile_module, "compile_document", counting)
    first = sb.sweep(pipe, INPUTS, GRID, progress=False, name="compiled", max_concurrent=4)
    assert sorted(compiled) == [(1, "!"), (1, "?"), (2, "!"), (2, "?")]  # 12 cells, 4 settings
    compiled.clear()
    again = sb.sweep(pipe, INPUTS, GRID, progress=False, name="compiled", max_concurrent=4)
    assert compiled == [] and again.attrs["sibyl_sweep"]["ran"] == 0
    pd.testing.assert_frame_equal(first, again)
    grown = sb.sweep(
        pipe, INPUTS, {"repeat.config.times": [1, 2, 3], "shout.config.mark": ["!", "?"]},
        progress=False, name="compiled", max_concurrent=4,
    )  # fmt: skip
    assert sorted(compiled) == [(3, "!"), (3, "?")]  # only the new settings
    assert grown.attrs["sibyl_sweep"]["ran"] == 6
    assert set(grown[grown["repeat.config.times"] == 3].output) == {
        expected_answer(q, 3, m) for q in ("a", "bb", "ccc") for m in "!?"
    }


def test_a_compiled_setting_runs_with_the_hooks_the_pipeline_has_now(home):
    pipe = sb.Pipeline.from_yaml(DOC)
    sb.sweep(pipe, INPUTS[:1], GRID, progress=False, store=False, max_concurrent=1)
    seen: list[str] = []

    class Watch:
        def before_node(self, node, ctx):
            from sibyl_nb.document.expressions import MISSING

            seen.append(node.id)
            return MISSING

    pipe.hooks.append(Watch())
    df = sb.sweep(pipe, INPUTS[:1], {"shout.config.mark": ["!"]}, progress=False, store=False)
    assert seen == ["prefix", "repeat", "shout"] and list(df.output) == ["SAY A!"]
    pipe.hooks.clear()
    seen.clear()
    sb.sweep(pipe, INPUTS[:1], {"shout.config.mark": ["!"]}, progress=False, store=False)
    assert seen == []


def test_a_record_holds_outputs_as_json_would_read_them_back():
    from sibyl_nb.experiments.cell import jsonable

    class Thing:
        def __repr__(self):
            return "<thing>"

    plain = {"a": [1, 2.5, True, None, "é"], "b": {"c": ("x", "y")}}
    assert jsonable(plain) == {"a": [1, 2.5, True, None, "é"], "b": {"c": ["x", "y"]}}
    copy_ = jsonable(plain)
    copy_["a"].append(3)
    assert plain["a"] == [1, 2.5, True, None, "é"]  # a copy: the run's own objects are not shared
    mixed = {1: "one", "t": Thing(), "n": [Thing()]}
    assert jsonable(mixed) == {"1": "one", "t": "<thing>", "n": ["<thing>"]}
    assert jsonable({(1, 2): "tuple key"}) == "{(1, 2): 'tuple key'}"  # not JSON at all: its repr
    loop: list = []
    loop.append(loop)
    assert jsonable(loop) == "[[...]]"  # a cycle: its repr


def test_a_live_repaint_builds_only_the_rows_it_shows(home, monkeypatch):
    import IPython.display

    import sibyl_nb.experiments.frame as frame_module
    import sibyl_nb.experiments.live as live

    shown: list[str] = []

    class Handle:
        def update(self, obj):
            shown.append(obj.data)

    def fake_display(obj, display_id=False):
        shown.append(obj.data)
        return Handle()

    built = collections.Counter()
    real_row_of = frame_module.row_of

    def counting_row_of(cell, *args):
        built[cell.key] += 1
        return real_row_of(cell, *args)

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(live, "INTERVAL", 0.0)
    monkeypatch.setattr(live, "MAX_ROWS", 3)
    monkeypatch.setattr(frame_module, "row_of", counting_row_of)
    df = run(max_concurrent=1, live=True)
    rows_per_paint = [s.count("<tr>") for s in shown]
    # the empty table, one paint per finished run (the newest 3 rows at most), then every row
    assert rows_per_paint == [0, 1, 2] + [3] * 10 + [12]
    # rows built: 1 + 2 + 3 x 10 for the repaints, 12 for the returned frame (not 1 + 2 + ... + 12)
    assert sum(built.values()) == 33 + 12
    last_paint_rows = re.findall(r"<td>(SAY [A-Z ]+[!?])</td>", shown[-2])
    assert last_paint_rows == list(df.output.tail(3))


def test_the_local_provider_is_computed_again_rather_than_recorded(home, monkeypatch):
    import sibyl_nb.providers.local as local

    calls: list[str] = []
    real = local.LocalProvider.complete

    async def counting(self, messages, **params):
        calls.append(messages[-1]["content"])
        return await real(self, messages, **params)

    monkeypatch.setattr(local.LocalProvider, "complete", counting)
    pipe = sb.Pipeline.from_yaml(ASK.replace("counting_answerer", "local"))
    first = sb.sweep(pipe, INPUTS, {"shout.config.mark": ["!"]}, progress=False, name="asked_locally")
    assert len(calls) == 3
    df = sb.sweep(pipe, INPUTS, {"shout.config.mark": ["!", "?"]}, progress=False, name="asked_locally")
    # the 3 new cells ran 'ask' again (cache: false) and the local provider computed the same answers
    assert len(calls) == 6 and sorted(calls[3:]) == sorted(calls[:3])
    assert list(df[df["shout.config.mark"] == "!"].output) == list(first.output)
    assert [a[:-1] for a in df[df["shout.config.mark"] == "?"].output] == [a[:-1] for a in first.output]
    assert df.attrs["sibyl_sweep"]["ran"] == 3


def test_a_cells_step_cache_is_handed_only_the_events_it_writes_from():
    from sibyl_nb.engine.events import Event, EventBus, EventKind
    from sibyl_nb.experiments.cell import CellCache

    got: list[str] = []

    class Recorder:
        def on_node_finished(self, ev):
            got.append(ev.node_id)

    cell = CellCache(store=None, template="t")
    cell.cache = Recorder()
    bus = EventBus()
    bus.subscribe(cell)
    for kind in EventKind:
        bus.emit(Event(kind.value, "run", node_id=kind.value))
    assert got == ["node_finished"]


def test_compiled_settings_kept_per_pipeline_are_bounded(home, monkeypatch):
    import sibyl_nb.document.compile as compile_module
    import sibyl_nb.experiments.grid as grid_module

    monkeypatch.setattr(grid_module, "MAX_VARIANTS", 2)
    pipe = sb.Pipeline.from_yaml(DOC)
    compiled: list[str] = []
    real = compile_module.compile_document

    def counting(data, *args, **kwargs):
        compiled.append(data["pipelines"]["chain"]["steps"][2]["config"]["mark"])
        return real(data, *args, **kwargs)

    monkeypatch.setattr(compile_module, "compile_document", counting)

    def marks(*values):
        sb.sweep(pipe, INPUTS[:1], {"shout.config.mark": list(values)}, progress=False, store=False)

    marks("!", "?")
    marks("!")  # kept: "!" is now the most recent
    marks("#")  # a third setting: "?" (least recently used) is forgotten
    marks("!", "#")
    assert compiled == ["!", "?", "#"]
    marks("?")
    assert compiled == ["!", "?", "#", "?"]
    assert len(pipe._sibyl_variants) == 2
