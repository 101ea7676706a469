"""What a document says is what runs: lazy data dependencies, ``${name}`` resolution, load-time name
checks and the local provider's empty-section parsing. Each document here is written from scratch."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from seed_examples import block

import sibyl_nb as sb
from sibyl_nb.providers.local import _section


@sb.technique("sem.slow_value")
async def _slow_value(ctx):
    """An async producer that finishes late, so a reader that does not wait for it sees nothing."""
    await asyncio.sleep(ctx.config.get("sleep", 0.05))
    return {"value": ctx.config.get("value", ctx.node_id)}


@sb.technique("sem.read", blocking=False)
def _read(ctx):
    """Reports what it was given: its rendered ``seen`` config and the ids in ``ctx.upstream``."""
    return {"seen": ctx.config.get("seen"), "up": sorted(ctx.upstream)}


@sb.technique("sem.first_upstream", blocking=False, outputs=("value",))
def _first_upstream(ctx):
    """Reads its input only through ``ctx.upstream`` (no template)."""
    outs = list(ctx.upstream.values())
    return {"value": outs[0]["value"] if outs else None}


@sb.technique("sem.fields", blocking=False, outputs=("count", "label"))
def _fields(ctx):
    return {"count": 3, "label": "x"}


def load(text: str, **kw) -> sb.Pipeline:
    return sb.Pipeline.from_yaml(textwrap.dedent(text), **kw)


def orchestration(mode: str, steps: str, extra: str = "") -> str:
    return (
        "steps:\n"
        "  - use: workflow_orchestration.orchestration\n"
        "    config:\n"
        f"      subtechnique: {mode}\n"
        "      lazy: true\n" + extra + "      steps:\n" + textwrap.indent(textwrap.dedent(steps), "        ")
    )


# -- 1. lazy: true keeps every data dependency ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["sequential", "parallel", "conditional"])
def test_lazy_template_reader_waits_for_its_async_producer(mode):
    pipe = load(
        orchestration(
            mode,
            """
            - name: produce
              technique: sem.slow_value
              config: {value: forty-two, sleep: 0.05}
            - name: unrelated
              technique: sem.slow_value
              config: {value: nobody reads me, sleep: 0.0}
            - name: consume
              technique: sem.read
              config:
                seen: "got ${produce.value}"
            """,
        )
    )
    r = pipe.run({})
    assert r.status("produce") == "ran"
    assert r.outputs["consume"]["seen"] == "got forty-two"
    assert r.record("consume").started >= r.record("produce").ended
    if mode == "parallel":  # every open end of a parallel step is its output, so it is needed
        assert r.status("unrelated") == "ran"
    else:  # the output is the last step, and nothing it needs reads 'unrelated'
        assert r.status("unrelated") == "skipped"
        assert r.output == r.outputs["consume"]


def test_lazy_sequential_upstream_reader_keeps_its_predecessor():
    pipe = load(
        orchestration(
            "sequential",
            """
            - name: produce
              technique: sem.slow_value
              config: {value: from upstream}
            - name: consume
              technique: sem.first_upstream
            """,
        )
    )
    r = pipe.run({})
    assert r.ran() == ["produce", "consume"]
    assert r.output == {"value": "from upstream"}


def test_lazy_parallel_runs_every_output_not_just_the_last_step():
    pipe = load(
        orchestration(
            "parallel",
            """
            - name: a
              technique: sem.slow_value
              config: {value: A}
            - name: b
              technique: sem.slow_value
              config: {value: B}
            - name: c
              technique: sem.slow_value
              config: {value: C}
            """,
        )
    )
    r = pipe.run({})
    assert sorted(r.ran()) == ["a", "b", "c"]


def test_lazy_parallel_with_combine_skips_what_the_combine_does_not_need():
    pipe = load(
        orchestration(
            "parallel",
            """
            - name: a
              technique: sem.slow_value
              config: {value: A}
            - name: b
              technique: sem.slow_value
              config: {value: B}
            """,
        )
        + "      combine_step:\n"
        "        name: join\n"
        "        technique: sem.read\n"
        "        depends_on: [a]\n"
    )
    r = pipe.run({})
    assert r.status("a") == "ran" and r.status("join") == "ran"
    assert r.status("b") == "skipped"
    assert r.outputs["join"]["up"] == ["a"]


def test_lazy_conditional_guard_reads_its_producer():
    pipe = load(
        orchestration(
            "conditional",
            """
            - name: produce
              technique: sem.slow_value
              config: {value: go}
            - name: gated
              technique: sem.read
              condition: ${produce.value} == "go"
              config: {seen: "${produce.value}"}
            """,
        )
    )
    r = pipe.run({})
    assert r.status("gated") == "ran" and r.outputs["gated"]["seen"] == "go"


def test_parallel_reader_of_a_sibling_waits_for_it_even_without_lazy():
    text = orchestration(
        "parallel",
        """
        - name: produce
          technique: sem.slow_value
          config: {value: v}
        - name: consume
          technique: sem.read
          config: {seen: "${produce.value}"}
        """,
    ).replace("      lazy: true\n", "")
    r = load(text).run({})
    assert r.outputs["consume"]["seen"] == "v"
    assert r.record("consume").started >= r.record("produce").ended


def test_reading_a_later_step_in_a_sequence_is_a_load_error():
    text = orchestration(
        "sequential",
        """
        - name: early
          technique: sem.read
          config: {seen: "${late.value}"}
        - name: late
          technique: sem.slow_value
        """,
    )
    with pytest.raises(sb.SpecError, match=r"early.*late") as exc:
        load(text)
    assert exc.value.line is not None


# -- 3. names ----------------------------------------------------------------------------------------


def test_input_field_is_never_rebound_to_a_similar_node():
    pipe = load(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              subtechnique: conditional
              graph_definition:
                nodes:
                  - id: evaluate
                    technique: sem.fields
                  - id: strict
                    technique: sem.read
                  - id: lenient
                    technique: sem.read
                edges:
                  - from: evaluate
                    to: strict
                    condition: ${evaluation_mode} == "strict"
                  - from: evaluate
                    to: lenient
                    condition: ${evaluation_mode} == "lenient"
        """
    )
    for mode in ("strict", "lenient"):
        r = pipe.run({"evaluation_mode": mode})
        assert r.ran() == ["evaluate", mode], r.format_trace()


def test_seed_edge_name_reads_the_edge_source_by_the_documented_rule():
    pipe = sb.Pipeline.from_yaml(block("Cyclic Graphs"))
    assert any("evaluation" in w and "evaluate" in w for w in pipe.warnings)
    r = pipe.run({"query": "What is Python used for?"})
    evaluations = [x for x in r.records if x.node_id == "evaluate" and x.status == "ran"]
    assert evaluations
    assert evaluations[0].output["score"] >= 0.8 and r.status("refine") == "skipped"
    # an input field of that name wins over the edge-source rule: a low score keeps the loop going
    forced = pipe.run({"query": "What is Python used for?", "evaluation": {"score": 0.1}})
    assert forced.stopped_by == "max_iterations"
    assert sum(x.node_id == "refine" and x.status == "ran" for x in forced.records) >= 1


def test_env_name_default_applies_when_unset(monkeypatch):
    monkeypatch.delenv("SEM_UNSET_VAR", raising=False)
    pipe = load(
        """
        steps:
          - id: read
            use: sem.read
            config:
              seen: "${env:SEM_UNSET_VAR:-fallback-value}"
        """,
        trust_code=True,
    )
    assert pipe.spec.env_reads == (("SEM_UNSET_VAR", "steps[0].config.seen (line 6)"),)
    assert pipe.run({}).output["seen"] == "fallback-value"
    monkeypatch.setenv("SEM_UNSET_VAR", "set-value")
    assert pipe.run({}).output["seen"] == "set-value"


def test_connection_setting_default_applies_for_unset_env(monkeypatch):
    monkeypatch.delenv("SEM_NO_SUCH_URL", raising=False)
    pipe = load(
        """
        steps:
          - id: read
            use: sem.read
            config:
              seen: {redis_url: "${SEM_NO_SUCH_URL:-redis://127.0.0.1:6379/9}"}
        """
    )
    assert pipe.run({}).output["seen"] == {"redis_url": "redis://127.0.0.1:6379/9"}


def test_field_typo_is_a_load_error_naming_known_outputs():
    with pytest.raises(sb.SpecError) as exc:
        load(
            """
            steps:
              - id: src
                use: sem.fields
              - id: use_it
                use: sem.read
                config:
                  seen: "${src.cout}"
            """
        )
    message = str(exc.value)
    assert "cout" in message and "count" in message and "label" in message
    assert exc.value.line == 8


def test_builtin_field_typo_is_a_load_error():
    with pytest.raises(sb.SpecError, match=r"retrieve.*'cuont'.*count"):
        load(
            """
            steps:
              - use: workflow_orchestration.orchestration
                config:
                  subtechnique: conditional
                  steps:
                    - name: retrieve
                      technique: rag.retrieval
                    - name: rerank
                      technique: rag.reranking
                      condition: ${retrieve.cuont} > 5
            """
        )


def test_unclosed_reference_is_a_load_error():
    with pytest.raises(sb.SpecError, match=r"never closed") as exc:
        load(
            """
            steps:
              - id: read
                use: sem.read
                config:
                  seen: "answer: ${query"
            """
        )
    assert exc.value.line == 6


def test_latest_field_lookup_does_not_rescan_records():
    """The run indexes field values once: a lookup costs the same after 2,000 records as after 2."""
    from sibyl_nb.document.expressions import parse_ref
    from sibyl_nb.engine.result import StepRecord
    from sibyl_nb.engine.scope import resolver_for

    class Run:
        input: dict = {}
        state: dict = {}
        session: dict = {}
        results: dict = {}
        aliases: dict = {}
        extras: dict = {}

        def __init__(self):
            self.records = []

    run = Run()
    run.extras = {}
    for i in range(2000):
        run.records.append(StepRecord(f"n{i}", "t", 1, "ran", 0, 0, 1, {"f": i}, None, None, None, ""))
    resolve = resolver_for(run, "x")
    ref = parse_ref("f")
    assert resolve(ref) == 1999

    class Spy(list):
        reads = 0

        def __getitem__(self, k):
            Spy.reads += 1
            return super().__getitem__(k)

        def __iter__(self):
            Spy.reads += 1000
            return super().__iter__()

        def __reversed__(self):
            Spy.reads += 1000
            return super().__reversed__()

    run.records = Spy(run.records)
    run.records.append(StepRecord("m", "t", 1, "ran", 0, 0, 1, {"f": "new"}, None, None, None, ""))
    for _ in range(100):
        assert resolve(ref) == "new"
    assert Spy.reads < 50


# -- 5. the local provider's empty sections -------------------------------------------------------------


def test_empty_previous_section_does_not_swallow_the_critique():
    prompt = "Previous: \nCritique: Score: 7/10\nImproved:"
    assert _section(prompt, r"previous(?:\s+answer)?", r"critique|feedback|improved|question") == ""
    assert _section(prompt, r"critique|feedback", r"improved|question|previous") == "Score: 7/10"
    assert _section("Previous:\n  an answer\nCritique: ok", "previous", "critique") == "an answer"


@pytest.mark.parametrize(
    "draft", [{"query": "What is Python?"}, {"query": "What is Python?", "answer": ""}], ids=["now", "before"]
)
def test_notebook_refinement_run_improves_and_never_nests_critiques(draft):
    """Notebook 05's input (and the one it had, with an empty ``answer``): the critique scores rise
    and no refined answer quotes a critique."""
    pipe = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow"))
    r = pipe.run(draft)
    scores = [x.output["score"] for x in r.records if x.node_id == "critique" and x.status == "ran"]
    refined = [x.output["answer"] for x in r.records if x.node_id == "refine" and x.status == "ran"]
    # (today: 7, 5, 4, 4, 4 and every refined answer quotes the critique it was given)
    assert scores == sorted(scores) and scores[-1] >= 8, scores
    assert r.stopped_by == "completed"
    assert len(refined) == len(scores) - 1 >= 1
    for answer in refined:
        assert "Critique" not in answer and "Score:" not in answer and answer.startswith("Python")


@pytest.mark.slow
def test_notebook_05_shows_both_loops_iteration_by_iteration(tmp_path):
    """The text notebook 05's loop cells print, on a real kernel."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parent.parent / "notebooks" / "05_complete_workflows.ipynb"
    book = nbformat.read(path, as_version=4)
    NotebookClient(
        book, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    printed = {
        i: "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")
        for i, c in enumerate(book.cells)
        if c.cell_type == "code"
    }
    refinement = next(t for t in printed.values() if "critique" in t and "stopped by" in t)
    lines = [ln.split() for ln in refinement.splitlines() if ln.startswith("iteration")]
    assert [(w[1], w[2], w[3]) for w in lines] == [
        ("1", "generate", "ran"),
        ("1", "critique", "ran"),
        ("1", "refine", "ran"),
        ("2", "critique", "ran"),
        ("2", "refine", "skipped"),
    ]
    assert "score 7" in refinement and "score 8" in refinement and "stopped by: completed" in refinement
    assert "Critique:" not in refinement and "Score:" not in refinement.split("result:")[1]
    cyclic = next(t for t in printed.values() if "evaluate" in t and "max_iterations" in t)
    evaluations = [ln for ln in cyclic.splitlines() if " evaluate " in ln]
    assert len([ln for ln in evaluations if "score 0.0" in ln]) == 5
    assert cyclic.count("stopped by: max_iterations") == 1 and cyclic.count("stopped by: completed") == 1
