"""Every key a step, node, edge or config accepts does what it says, or is refused at load naming its line.

The audit: ``test_every_accepted_key_is_covered`` fails when a key is added to one of the loader's key
lists without a test here (or in the named feature test) proving what it does.
"""

from __future__ import annotations

import asyncio
import textwrap
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.document import compile as spec_compile

CALLS: dict[str, int] = {}


@sb.technique("set.flaky", blocking=False, outputs=("ok", "attempt"))
def _flaky(ctx):
    key = ctx.config["key"]
    CALLS[key] = CALLS.get(key, 0) + 1
    if ctx.attempt < ctx.config.get("succeed_on", 3):
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return {"ok": True, "attempt": ctx.attempt}


@sb.technique("set.slow", outputs=("slept",))
async def _slow(ctx):
    await asyncio.sleep(ctx.config.get("sleep", 1.0))
    return {"slept": ctx.config.get("sleep", 1.0)}


@sb.technique("set.count", blocking=False, outputs=("n", "up"))
def _count(ctx):
    key = ctx.config.get("key", ctx.node_id)
    CALLS[key] = CALLS.get(key, 0) + 1
    return {"n": CALLS[key], "up": sorted(ctx.upstream)}


@sb.technique("set.boom", blocking=False, outputs=())
def _boom(ctx):
    raise ValueError("boom")


def load(text: str, **kw) -> sb.Pipeline:
    return sb.Pipeline.from_yaml(textwrap.dedent(text), **kw)


def refused(text: str, match: str, line: int, **kw) -> None:
    with pytest.raises(sb.SpecError, match=match) as exc:
        load(text, **kw)
    assert exc.value.line == line, str(exc.value)


@pytest.fixture(autouse=True)
def _fresh_calls():
    CALLS.clear()


# -- plain technique steps ----------------------------------------------------------------------------


def test_step_retry_retries():
    r = load(
        """
        steps:
          - id: f
            use: set.flaky
            config: {key: a}
            retry: {max_attempts: 3, initial_delay: 0}
        """
    ).run({})
    assert r.output == {"ok": True, "attempt": 3} and CALLS["a"] == 3


def test_step_on_error_answers():
    r = load(
        """
        steps:
          - id: b
            use: set.boom
            on_error:
              - name: rescue
                technique: set.count
        """
    ).run({})
    assert r.record("rescue").fallback_for == "b" and r.outputs["b"]["n"] == 1


def test_step_condition_skips():
    pipe = load(
        """
        inputs: [go]
        steps:
          - id: c
            use: set.count
            condition: ${go}
        """
    )
    assert pipe.run({"go": False}).status("c") == "skipped"
    assert pipe.run({"go": True}).status("c") == "ran"


def test_step_timeout_stops_the_call():
    pipe = load(
        """
        steps:
          - id: s
            use: set.slow
            config: {sleep: 5}
            timeout: 0.05
        """
    )
    t0 = time.perf_counter()
    with pytest.raises(sb.NodeExecutionError, match=r"(?i)time"):
        pipe.run({})
    assert time.perf_counter() - t0 < 2


def test_step_cache_false_opts_out_of_the_step_cache():
    pipe = load(
        """
        shops:
          infrastructure:
            config:
              caching: {enabled: true, storage: memory}
        steps:
          - id: cached
            use: set.count
            config: {key: cached}
          - id: fresh
            use: set.count
            config: {key: fresh}
            cache: false
        """
    )
    pipe.run({"query": "same"})
    second = pipe.run({"query": "same"})
    assert second.status("cached") == "cached" and second.status("fresh") == "ran"
    assert CALLS == {"cached": 1, "fresh": 2}


def test_step_depends_on_chooses_the_upstream():
    r = load(
        """
        steps:
          - {id: a, use: set.count}
          - {id: b, use: set.count}
          - {id: c, use: set.count, depends_on: [a]}
        """
    ).run({})
    assert r.outputs["c"]["up"] == ["a"]


def test_step_description_is_documentation_only():
    plain = load("steps:\n  - {id: a, use: set.count}\n").run({})
    CALLS.clear()
    described = load("steps:\n  - {id: a, use: set.count, description: counts once}\n").run({})
    assert described.ran() == plain.ran() == ["a"] and described.output["n"] == 1


def test_max_iterations_on_a_plain_step_is_refused():
    refused("steps:\n  - id: a\n    use: set.count\n    max_iterations: 3\n", r"never loop", 4)


# -- graph and orchestration steps as a whole ---------------------------------------------------------

GRAPH_STEP = """\
steps:
  - use: workflow_orchestration.graph
    {key}: {value}
    config:
      graph_definition:
        nodes:
          - {{id: a, technique: set.count}}
"""
ORCH_STEP = """\
steps:
  - use: workflow_orchestration.orchestration
    {key}: {value}
    config:
      steps:
        - {{name: a, technique: set.count}}
"""
COMPOUND_VALUES = {
    "retry": "3",
    "on_error": "[{name: x, technique: set.count}]",
    "condition": "${go}",
    "timeout": "1",
    "cache": "false",
    "max_iterations": "3",
    "max_concurrent": "2",
    "for_each": "${items}",
}


@pytest.mark.parametrize("key", spec_compile.COMPOUND_REFUSED)
@pytest.mark.parametrize("template", [GRAPH_STEP, ORCH_STEP], ids=["graph", "orchestration"])
def test_node_settings_on_a_whole_graph_or_orchestration_are_refused(key, template):
    text = template.format(key=key, value=COMPOUND_VALUES[key])
    refused(text, rf"'{key}' on a workflow_orchestration\.\w+ step is not applied", 3)


def test_orchestration_config_retry_and_timeout_apply_to_every_step():
    pipe = load(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              retry: {max_attempts: 3, initial_delay: 0}
              timeout: 0.05
              steps:
                - {name: f, technique: set.flaky, config: {key: f}}
                - {name: s, technique: set.slow, config: {sleep: 5}}
        """
    )
    with pytest.raises(sb.NodeExecutionError, match=r"node 's'") as exc:
        pipe.run({})
    assert CALLS["f"] == 3 and exc.value.result.outputs["f"]["attempt"] == 3


def test_orchestration_max_concurrent_limits_its_steps():
    r = load(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: parallel
              max_concurrent: 1
              steps:
                - {name: a, technique: set.slow, config: {sleep: 0.03}}
                - {name: b, technique: set.slow, config: {sleep: 0.03}}
        """
    ).run({})
    a, b = r.record("a"), r.record("b")
    assert a.ended <= b.started or b.ended <= a.started


def test_orchestration_max_iterations_is_refused():
    refused(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              max_iterations: 3
              steps:
                - {name: a, technique: set.count}
        """,
        r"never loops",
        5,
    )


# -- orchestration steps and what hangs under them ---------------------------------------------------


def test_always_next_to_a_condition_is_an_error():
    refused(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: conditional
              steps:
                - name: a
                  technique: set.count
                  always: true
                  condition: ${go}
        """,
        r"both 'always: true' and 'condition'",
        9,
    )


def test_always_true_runs_the_step():
    r = load(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: conditional
              steps:
                - {name: a, technique: set.count, always: true}
        """
    ).run({})
    assert r.status("a") == "ran"


def test_output_on_an_orchestration_step_is_refused():
    refused(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              steps:
                - {name: a, technique: set.count, output: result}
        """,
        r"'output' on step 'a' is not a setting",
        6,
    )


@pytest.mark.parametrize("key,value", [("condition", "${go}"), ("cache", "false"), ("on_error", "[]")])
def test_fallback_settings_it_cannot_honour_are_refused(key, value):
    refused(
        f"""
        steps:
          - use: workflow_orchestration.orchestration
            config:
              steps:
                - name: a
                  technique: set.boom
                  on_error:
                    - name: rescue
                      technique: set.count
                      {key}: {value}
        """,
        rf"unknown key '{key}' in an on_error step",
        11,
    )


def test_on_condition_true_step_honours_cache_and_condition():
    pipe = load(
        """
        shops:
          infrastructure:
            config:
              caching: {enabled: true, storage: memory}
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: conditional
              steps:
                - name: gate
                  technique: set.count
                  condition: ${go}
                  on_condition_true:
                    - {name: then_fresh, technique: set.count, cache: false}
                    - {name: then_gated, technique: set.count, condition: "${never}"}
        """
    )
    pipe.run({"go": True, "never": False})
    r = pipe.run({"go": True, "never": False})
    assert r.status("then_fresh") == "ran" and CALLS["then_fresh"] == 2
    assert r.status("then_gated") == "skipped"


def test_combine_step_honours_condition_and_cache():
    pipe = load(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: parallel
              steps:
                - {name: a, technique: set.count}
              combine_step:
                name: join
                technique: set.count
                condition: ${go}
        """
    )
    assert pipe.run({"go": False}).status("join") == "skipped"
    assert pipe.run({"go": True}).status("join") == "ran"


def test_on_condition_true_cannot_take_depends_on():
    refused(
        """
        steps:
          - use: workflow_orchestration.orchestration
            config:
              subtechnique: conditional
              steps:
                - name: a
                  technique: set.count
                  condition: ${go}
                  on_condition_true:
                    - {name: b, technique: set.count, depends_on: [a]}
        """,
        r"depends_on",
        11,
    )


# -- graph nodes and graph config ----------------------------------------------------------------------


def test_graph_node_settings_work():
    r = load(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              graph_definition:
                nodes:
                  - {id: f, technique: set.flaky, config: {key: g}, retry: {max_attempts: 3, initial_delay: 0}}
                  - id: b
                    technique: set.boom
                    on_error: [{name: rescue, technique: set.count}]
                  - {id: skipped, technique: set.count, condition: "${go}"}
                  - {id: s, technique: set.slow, config: {sleep: 5}, timeout: 0.05,
                     on_error: [{name: late, technique: set.count}]}
                edges:
                  - {from: f, to: b}
                  - {from: b, to: skipped}
                  - {from: skipped, to: s}
        """
    ).run({"go": False})
    assert r.outputs["f"]["attempt"] == 3
    assert r.outputs["b"] == r.outputs["rescue"]
    assert r.status("skipped") == "skipped"
    assert r.record("late").fallback_for == "s"


def test_graph_node_max_iterations_caps_its_own_loop():
    refused(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              subtechnique: cyclic
              graph_definition:
                nodes:
                  - {id: a, technique: set.count}
                  - {id: b, technique: set.count, max_iterations: 2}
                edges:
                  - {from: a, to: b}
                  - {from: b, to: a}
        """,
        r"max_iterations on node 'b' caps nothing.*re-enters \(a\)",
        9,
    )
    r = load(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              subtechnique: cyclic
              max_iterations: 5
              graph_definition:
                nodes:
                  - {id: a, technique: set.count, max_iterations: 2}
                  - {id: b, technique: set.count}
                edges:
                  - {from: a, to: b}
                  - {from: b, to: a}
        """
    ).run({})
    assert sum(x.node_id == "a" and x.status == "ran" for x in r.records) == 2
    assert r.stopped_by == "max_iterations"


@pytest.mark.parametrize("key", ["entry", "exit", "output"])
def test_graph_definition_keys_that_do_nothing_are_refused(key):
    refused(
        f"""
        steps:
          - use: workflow_orchestration.graph
            config:
              graph_definition:
                {key}: a
                nodes:
                  - {{id: a, technique: set.count}}
        """,
        rf"'{key}'",
        6,
    )


def test_builder_code_in_a_dag_is_refused():
    refused(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              subtechnique: dag
              builder_code: "def build_graph(x): pass"
              graph_definition:
                nodes:
                  - {id: a, technique: set.count}
        """,
        r"'builder_code' has no effect in a dag graph",
        6,
    )


def test_graph_definition_in_a_dynamic_graph_is_refused():
    refused(
        """
        steps:
          - use: workflow_orchestration.graph
            config:
              subtechnique: dynamic
              builder: whatever
              graph_definition:
                nodes: []
        """,
        r"'graph_definition' has no effect in a dynamic graph",
        7,
    )


# -- nodes a dynamic builder adds ----------------------------------------------------------------------


@sb.graph_builder("set.retrying_builder")
def _retrying_builder(input_data):
    g = sb.Graph()
    g.add_node("f", "set.flaky", {"key": "dyn"}, retry={"max_attempts": 3, "initial_delay": 0})
    g.add_node("gated", "set.count", condition="${go}")
    g.add_edge("start", "f")
    g.add_edge("f", "gated")
    if input_data.get("slow"):
        g.add_node("s", "set.slow", {"sleep": 5}, timeout=0.05)
        g.add_edge("gated", "s")
    return g


@sb.graph_builder("set.bad_option_builder")
def _bad_option_builder(input_data):
    g = sb.Graph()
    g.add_node("f", "set.count", retries=3)
    g.add_edge("start", "f")
    return g


DYNAMIC = """
steps:
  - use: workflow_orchestration.graph
    config:
      subtechnique: dynamic
      builder: {name}
"""


def test_dynamic_add_node_settings_are_applied():
    pipe = load(DYNAMIC.format(name="set.retrying_builder"))
    r = pipe.run({"go": False})
    assert r.outputs["f"]["attempt"] == 3 and CALLS["dyn"] == 3
    assert r.status("gated") == "skipped"
    t0 = time.perf_counter()
    with pytest.raises(sb.NodeExecutionError, match=r"(?i)time"):
        pipe.run({"go": True, "slow": True})
    assert time.perf_counter() - t0 < 2


def test_dynamic_add_node_unknown_option_is_refused():
    with pytest.raises(sb.NodeExecutionError, match=r"add_node option 'retries'.*did you mean 'retry'"):
        load(DYNAMIC.format(name="set.bad_option_builder")).run({})


# -- the audit ------------------------------------------------------------------------------------------

COVERED = {
    "PIPELINE_KEYS": {
        "shop": "documentation (the seed's shop label)",
        "steps": "every test",
        "description": "PipelineSpec.description",
        "inputs": "test_step_condition_skips",
        "max_concurrent": "tests/test_engine_semantics.py",
        "executor": "tests/test_dask_factory.py",
        "name": "tests/test_seed_examples.py",
        "scheduler_address": "tests/test_dask_factory.py",
    },
    "STEP_KEYS": {
        "use": "every test",
        "technique": "every test",
        "config": "every test",
        "id": "every test",
        "name": "tests/test_seed_examples.py",
        "retry": "test_step_retry_retries",
        "on_error": "test_step_on_error_answers",
        "condition": "test_step_condition_skips",
        "timeout": "test_step_timeout_stops_the_call",
        "cache": "test_step_cache_false_opts_out_of_the_step_cache",
        "depends_on": "test_step_depends_on_chooses_the_upstream",
        "max_iterations": "test_max_iterations_on_a_plain_step_is_refused",
        "description": "test_step_description_is_documentation_only",
        "for_each": "tests/test_for_each.py",
        "max_concurrent": "tests/test_for_each.py",
    },
    "GRAPH_NODE_KEYS": {
        "id": "every graph test",
        "technique": "every graph test",
        "use": "tests/test_spec_errors.py",
        "config": "test_graph_node_settings_work",
        "retry": "test_graph_node_settings_work",
        "on_error": "test_graph_node_settings_work",
        "timeout": "test_graph_node_settings_work",
        "cache": "test_step_cache_false_opts_out_of_the_step_cache (same Node.cache)",
        "condition": "test_graph_node_settings_work",
        "max_iterations": "test_graph_node_max_iterations_caps_its_own_loop",
        "description": "test_step_description_is_documentation_only",
        "for_each": "tests/test_for_each.py",
        "max_concurrent": "tests/test_for_each.py",
    },
    "ORCH_STEP_KEYS": {
        "name": "every orchestration test",
        "id": "every orchestration test",
        "technique": "every orchestration test",
        "use": "tests/test_spec_errors.py",
        "config": "test_orchestration_config_retry_and_timeout_apply_to_every_step",
        "depends_on": "tests/test_seed_examples.py::test_sequential_orchestration_ingests_then_search_finds_it",
        "retry": "test_orchestration_config_retry_and_timeout_apply_to_every_step",
        "on_error": "tests/test_seed_examples.py::test_error_handling_fallback_supplies_output_and_retries_back_off",
        "condition": "test_on_condition_true_step_honours_cache_and_condition",
        "always": "test_always_true_runs_the_step, test_always_next_to_a_condition_is_an_error",
        "on_condition_true": "test_on_condition_true_step_honours_cache_and_condition",
        "timeout": "test_orchestration_config_retry_and_timeout_apply_to_every_step",
        "cache": "test_on_condition_true_step_honours_cache_and_condition",
        "output": "test_output_on_an_orchestration_step_is_refused",
        "description": "test_step_description_is_documentation_only",
        "for_each": "tests/test_for_each.py",
        "max_concurrent": "tests/test_for_each.py",
    },
    "GRAPH_CONFIG_KEYS": {
        "subtechnique": "every graph test",
        "max_iterations": "test_graph_node_max_iterations_caps_its_own_loop",
        "max_concurrent": "tests/test_engine_semantics.py",
        "graph_definition": "test_graph_definition_in_a_dynamic_graph_is_refused",
        "graph_builder": "tests/test_spec_errors.py",
        "builder_code": "test_builder_code_in_a_dag_is_refused",
        "builder": "test_dynamic_add_node_settings_are_applied",
        "executor": "tests/test_dask_factory.py",
        "description": "test_step_description_is_documentation_only",
    },
    "ORCH_CONFIG_KEYS": {
        "subtechnique": "every orchestration test",
        "steps": "every orchestration test",
        "max_concurrent": "test_orchestration_max_concurrent_limits_its_steps",
        "combine_step": "test_combine_step_honours_condition_and_cache",
        "lazy": "tests/test_document_semantics.py",
        "retry": "test_orchestration_config_retry_and_timeout_apply_to_every_step",
        "timeout": "test_orchestration_config_retry_and_timeout_apply_to_every_step",
        "description": "test_step_description_is_documentation_only",
        "max_iterations": "test_orchestration_max_iterations_is_refused",
    },
    "EDGE_KEYS": {
        "from": "every graph test",
        "to": "every graph test",
        "condition": "tests/test_document_semantics.py::test_input_field_is_never_rebound_to_a_similar_node",
        "default": "the engine helper's tests (else edges)",
        "description": "test_step_description_is_documentation_only",
    },
}


def test_every_accepted_key_is_covered():
    for name, covered in COVERED.items():
        keys = set(getattr(spec_compile, name))
        assert keys == set(covered), f"{name}: untested {keys - set(covered)}, stale {set(covered) - keys}"
    # what hangs under an orchestration step accepts only what its node honours
    assert set(spec_compile.FALLBACK_KEYS) < set(spec_compile.THEN_KEYS) < set(spec_compile.ORCH_STEP_KEYS)
    assert "output" not in spec_compile.COMBINE_KEYS and "always" not in spec_compile.COMBINE_KEYS
