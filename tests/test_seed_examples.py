"""Every pipeline YAML block of the seed loads as written; the graph/orchestration ones run end to end on
the embedded defaults (local provider, sample corpus) with their behaviour asserted."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from seed_examples import block, pipeline_blocks

import sibyl_nb as sb
from sibyl_nb.engine.result import text_of
from sibyl_nb.techniques.registry import get_technique, register_technique

QUESTION = {"query": "What is Python used for in machine learning and data science?"}


@pytest.mark.parametrize("heading,text", pipeline_blocks(), ids=[h for h, _ in pipeline_blocks()])
def test_seed_pipeline_block_loads(heading, text):
    doc = sb.load_document(text, trust_code=True)
    assert doc.pipelines
    for spec in doc.pipelines.values():
        assert spec.graph.nodes


@contextlib.contextmanager
def with_latency(delays: dict[str, float]):
    """Give local techniques the latency a real network call has, so concurrency shows in the timings."""
    saved = {name: get_technique(name) for name in delays}
    try:
        for name, delay in delays.items():
            info = saved[name]

            async def slow(ctx, _info=info, _delay=delay):
                await asyncio.sleep(_delay)
                out = _info.fn(ctx)
                return await out if asyncio.iscoroutine(out) else out

            register_technique(
                name,
                slow,
                subtechniques=info.subtechniques,
                config_schema=info.config_schema,
                outputs=info.outputs,
                outputs_for=info.outputs_for,
            )
        yield
    finally:
        for name, info in saved.items():
            register_technique(
                name,
                info.fn,
                blocking=info.blocking,
                subtechniques=info.subtechniques,
                config_schema=info.config_schema,
                outputs=info.outputs,
                outputs_for=info.outputs_for,
            )


@contextlib.contextmanager
def failing(name: str, when=lambda ctx: True, calls: list | None = None):
    """Make technique ``name`` raise when ``when(ctx)``; record every call's attempt."""
    info = get_technique(name)

    async def maybe_fail(ctx):
        if calls is not None:
            calls.append((ctx.node_id, ctx.attempt))
        if when(ctx):
            raise ConnectionError(f"{name} unavailable")
        out = info.fn(ctx)
        return await out if asyncio.iscoroutine(out) else out

    register_technique(
        name,
        maybe_fail,
        subtechniques=info.subtechniques,
        config_schema=info.config_schema,
        outputs=info.outputs,
        outputs_for=info.outputs_for,
    )
    try:
        yield
    finally:
        register_technique(
            name,
            info.fn,
            blocking=info.blocking,
            subtechniques=info.subtechniques,
            config_schema=info.config_schema,
            outputs=info.outputs,
            outputs_for=info.outputs_for,
        )


def overlap(result, a, b):
    ra, rb = result.record(a), result.record(b)
    return ra.started < rb.ended and rb.started < ra.ended


def test_dag_example_runs_searches_in_parallel_and_joins_after_both():
    pipe = sb.Pipeline.from_yaml(block("DAG (Directed Acyclic Graph)"))
    with with_latency({"rag.search": 0.05, "external.web_search": 0.05}):
        r = pipe.run(QUESTION)
    assert r.stopped_by == "completed"
    assert overlap(r, "search_docs", "search_web")
    combine = r.record("combine_results")
    assert combine.started >= max(r.record("search_docs").ended, r.record("search_web").ended)
    assert r.ran() == [
        "expand_query",
        "search_docs",
        "search_web",
        "combine_results",
        "generate_answer",
        "validate",
    ] or set(r.ran()) == {
        "expand_query",
        "search_docs",
        "search_web",
        "combine_results",
        "generate_answer",
        "validate",
    }
    assert len(r.outputs["expand_query"]["queries"]) == 3
    assert "python" in r.outputs["generate_answer"]["answer"].lower()
    assert 0.0 <= r.output["score"] <= 1.0


def runs_of(result, node_id):
    return [rec for rec in result.records if rec.node_id == node_id and rec.status == "ran"]


def test_cyclic_example_answer_good_at_once_does_not_loop():
    r = sb.Pipeline.from_yaml(block("Cyclic Graphs")).run(QUESTION)
    assert [e.output["score"] >= 0.8 for e in runs_of(r, "evaluate")] == [True]
    assert runs_of(r, "refine") == [] and r.status("refine") == "skipped"
    assert r.stopped_by == "completed"
    assert r.output == r.outputs["generate"] and "python" in r.text.lower()


def test_cyclic_example_loops_until_max_iterations_on_an_out_of_corpus_question():
    # "What is Redis?" is not in the demo corpus: the answer is a refusal, fact_check scores 0.0 every
    # time, so the loop runs evaluate -> refine five times and max_iterations (5) ends it.
    r = sb.Pipeline.from_yaml(block("Cyclic Graphs")).run({"query": "What is Redis?"})
    assert r.stopped_by == "max_iterations"
    assert [e.iteration for e in runs_of(r, "evaluate")] == [1, 2, 3, 4, 5]
    assert [e.output["score"] for e in runs_of(r, "evaluate")] == [0.0] * 5
    assert [f.iteration for f in runs_of(r, "refine")] == [1, 2, 3, 4, 5]
    # the loop value: refine's latest answer, the shape generate's answer has
    assert r.output == runs_of(r, "refine")[-1].output
    assert set(r.output) == set(r.outputs["generate"])


def test_iterative_refinement_loops_once_and_returns_the_refined_answer():
    # "What is Python?": the first answer has one sentence (critique 7/10 < 8), refine adds a supported
    # sentence, the second critique gives 8/10 and the loop ends by its condition.
    r = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow")).run({"query": "What is Python?"})
    assert r.stopped_by == "completed"
    assert [c.output["score"] for c in runs_of(r, "critique")] == [7, 8]
    assert [f.iteration for f in runs_of(r, "refine")] == [1]
    refined = runs_of(r, "refine")[0].output
    assert r.output == refined and r.text == refined["answer"]
    assert r.text.startswith(r.outputs["generate"]["answer"]) and len(r.text) > len(
        r.outputs["generate"]["answer"]
    )
    assert not r.text.startswith("Score:")


def test_iterative_refinement_capped_returns_the_same_shape():
    r = sb.Pipeline.from_yaml(block("Iterative Refinement Workflow")).run({"query": "What is Redis?"})
    assert r.stopped_by == "max_iterations"
    assert len(runs_of(r, "critique")) == 5 and len(runs_of(r, "refine")) == 5
    assert all(c.output["score"] < 8 for c in runs_of(r, "critique"))
    assert r.output == runs_of(r, "refine")[-1].output
    assert set(r.output) == set(r.outputs["generate"])


@pytest.mark.parametrize(
    "query,branch",
    [
        ("What year was Python created?", "factual_pipeline"),
        ("Is Python better than Java in your opinion?", "opinion_pipeline"),
        ("Write a short poem about the sea", "creative_pipeline"),
    ],
)
def test_conditional_example_runs_exactly_one_branch(query, branch):
    r = sb.Pipeline.from_yaml(block("Conditional Graphs")).run({"query": query})
    ran = {n for n in ("factual_pipeline", "opinion_pipeline", "creative_pipeline") if r.status(n) == "ran"}
    assert ran == {branch}, r.format_trace()
    # several exits: output has every exit, the branches that did not run are None (same shape always)
    branches = ("factual_pipeline", "opinion_pipeline", "creative_pipeline")
    assert r.output == {n: (r.outputs[n] if n == branch else None) for n in branches}
    assert r.text == text_of(r.outputs[branch])


def test_dynamic_example_graph_depends_on_input():
    pipe = sb.Pipeline.from_yaml(block("Dynamic Graphs"), trust_code=True)
    both = pipe.run({"query": "vector search", "include_search": True, "include_validation": True})
    only = pipe.run({"query": "vector search", "include_search": True, "include_validation": False})
    assert both.status("search") == "ran" and both.status("validate") == "ran"
    assert only.status("search") == "ran" and only.status("validate") is None
    assert "score" in both.output and "documents" in only.output


def test_dynamic_example_refuses_untrusted_builder_code():
    pipe = sb.Pipeline.from_yaml(block("Dynamic Graphs"))
    with pytest.raises(sb.NodeExecutionError, match="trust"):
        pipe.run({"include_search": True, "include_validation": False})


def test_sequential_orchestration_ingests_then_search_finds_it():
    r = sb.Pipeline.from_yaml(block("Sequential Orchestration")).run({})
    assert r.ran() == ["load_data", "chunk", "embed", "store"]
    assert r.output["count"] > 0 and r.output["count"] == r.outputs["embed"]["count"]


def test_parallel_orchestration_overlaps_and_combines():
    with with_latency({"rag.search": 0.05, "external.web_search": 0.05}):
        r = sb.Pipeline.from_yaml(block("Parallel Orchestration")).run(QUESTION)
    assert overlap(r, "search_docs", "search_code") and overlap(r, "search_docs", "search_web")
    comb = r.record("combine")
    assert comb.started >= max(r.record(n).ended for n in ("search_docs", "search_code", "search_web"))
    ids = {d["id"] for d in r.output["documents"]}
    for n in ("search_docs", "search_code", "search_web"):
        assert ids & {d["id"] for d in r.outputs[n]["documents"]}


def test_conditional_orchestration_follows_retrieve_count():
    r = sb.Pipeline.from_yaml(block("Conditional Orchestration")).run(QUESTION)
    count = r.outputs["retrieve"]["count"]
    assert r.status("rerank") == ("ran" if count > 5 else "skipped")
    assert r.status("expand_query") == ("ran" if count < 3 else "skipped")
    assert r.status("retry_retrieval") in (("ran",) if count < 3 else ("skipped", None))


def test_error_handling_fallback_supplies_output_and_retries_back_off():
    calls: list = []
    events: list = []
    pipe = sb.Pipeline.from_yaml(block("Error Handling Orchestration"))
    with (
        failing("rag.search", when=lambda ctx: ctx.config.get("collection") == "primary"),
        failing(
            "ai_generation.generation",
            when=lambda ctx: ctx.config.get("provider", "primary") == "primary",
            calls=calls,
        ),
    ):
        r = pipe.run(QUESTION, observers=[events.append])
    # primary_search failed once (no retry configured) and fallback_search answered from 'backup'
    assert r.record("fallback_search").fallback_for == "primary_search"
    assert r.outputs["primary_search"] == r.outputs["fallback_search"]
    assert {d["collection"] for d in r.outputs["primary_search"]["documents"]} == {"backup"}
    # generate: 3 attempts with exponential backoff, then simple_generate (provider fallback) answered
    assert [a for n, a in calls if n == "generate"] == [1, 2, 3]
    delays = [e.data["delay"] for e in events if e.kind == "node_retrying" and e.node_id == "generate"]
    assert len(delays) == 2 and delays[1] == pytest.approx(2 * delays[0])
    assert r.record("generate").attempts == 3
    assert r.output == r.outputs["simple_generate"] and r.output["answer"]


def test_lazy_example_runs_only_when_needed():
    pipe = sb.Pipeline.from_yaml(block("Lazy Evaluation"))
    assert pipe.run({"needs_expensive_step": False}).status("expensive_step") == "skipped"
    assert pipe.run({"needs_expensive_step": True}).status("expensive_step") == "ran"


def test_parallel_execution_placeholder_tasks_run():
    pipe = sb.Pipeline.from_yaml(block("Parallel Execution"))
    assert any("no technique" in w for w in pipe.warnings)
    r = pipe.run({"query": "x"})
    assert {"task1", "task2", "task3"} <= set(r.ran())


def test_research_workflow_end_to_end():
    pipe = sb.Pipeline.from_yaml(block("Research Workflow"), name="research_workflow")
    with with_latency({"rag.search": 0.03, "external.web_search": 0.03}):
        r = pipe.run(QUESTION)
    assert overlap(r, "search_internal", "search_external")
    assert r.ran()[-1] == "validate" and len(r.ran()) == 7
    assert r.outputs["expand"]["queries"]
    assert r.output["answer"] and 0 <= r.output["score"] <= 1


@pytest.mark.parametrize(
    "query,path",
    [
        ("What is Python?", "simple_search"),
        (
            "Compare BM25 and vector search for retrieval, and explain when hybrid search with reciprocal rank "
            "fusion beats both, considering latency, recall and cost trade-offs in production systems",
            "complex_search",
        ),
    ],
)
def test_adaptive_workflow_takes_one_path(query, path):
    r = sb.Pipeline.from_yaml(block("Adaptive Workflow")).run({"query": query})
    complexity = r.outputs["classify"]["complexity"]
    assert complexity in ("simple", "medium", "complex")
    expected = {
        "simple": {"simple_search"},
        "medium": {"medium_search", "medium_rerank"},
        "complex": {"complex_expand", "complex_search", "complex_rerank", "complex_consensus"},
    }
    ran = set(r.ran()) - {"classify"}
    assert ran == expected[complexity]
    assert path in ran
