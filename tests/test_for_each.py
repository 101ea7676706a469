"""``for_each``: a node run once per item of a list produced at run time, items concurrent up to
``max_concurrent``, each with its own record, retries and cache entry; output = list in item order."""

from __future__ import annotations

import asyncio
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError, SpecError

LIVE = {"now": 0, "peak": 0}
FAILS: dict[str, int] = {}
CALLS: list[str] = []


@sb.technique("fe.expand")
def _expand(ctx):
    n = ctx.input.get("n", 3)
    return {"queries": [f"q{i}" for i in range(n)]}


@sb.technique("fe.search")
async def _search(ctx):
    LIVE["now"] += 1
    LIVE["peak"] = max(LIVE["peak"], LIVE["now"])
    try:
        await asyncio.sleep(ctx.config.get("sleep", 0))
        key = str(ctx.item)
        CALLS.append(key)
        if FAILS.get(key, 0) > 0:
            FAILS[key] -= 1
            raise RuntimeError(f"flaky {key}")
        return {"hit": f"{ctx.config.get('prefix', '')}{ctx.item}", "seen_upstream": sorted(ctx.upstream)}
    finally:
        LIVE["now"] -= 1


@sb.technique("fe.quick")
def _quick(ctx):
    return {"n": ctx.item * 2}


@sb.technique("fe.collect")
def _collect(ctx):
    (items,) = ctx.upstream.values()
    return {
        "count": len(items),
        "hits": [x["hit"] if isinstance(x, dict) and "hit" in x else x for x in items],
    }


@pytest.fixture(autouse=True)
def _reset():
    LIVE.update(now=0, peak=0)
    FAILS.clear()
    CALLS.clear()
    yield


def graph(search_extra: str = "", graph_extra: str = "", infra: str = "") -> str:
    return f"""
pipelines:
  fe:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: dag
{graph_extra}
          graph_definition:
            nodes:
              - {{id: expand, technique: fe.expand}}
              - {{id: search, technique: fe.search, for_each: "${{expand.queries}}",
                 config: {{prefix: "found:"}}{search_extra}}}
              - {{id: collect, technique: fe.collect}}
            edges:
              - {{from: expand, to: search}}
              - {{from: search, to: collect}}
{infra}
"""


def test_one_record_per_item_output_in_item_order_and_downstream_gets_the_list():
    result = sb.Pipeline.from_yaml(graph()).run({"n": 4})
    assert result.outputs["search"] == [{"hit": f"found:q{i}", "seen_upstream": ["expand"]} for i in range(4)]
    assert result.output == {"count": 4, "hits": ["found:q0", "found:q1", "found:q2", "found:q3"]}
    ids = [r.node_id for r in result.records if r.node_id.startswith("search")]
    assert sorted(ids[:-1]) == ["search[0]", "search[1]", "search[2]", "search[3]"]
    assert ids[-1] == "search"  # the map node's own record closes its items
    assert [r.status for r in result.records if r.node_id.startswith("search[")] == ["ran"] * 4


def test_item_template_in_config_and_ctx_item():
    doc = graph().replace('config: {prefix: "found:"}', 'config: {prefix: "${item}="}')
    result = sb.Pipeline.from_yaml(doc).run({"n": 2})
    assert result.output["hits"] == ["q0=q0", "q1=q1"]


def test_items_run_concurrently_up_to_max_concurrent():
    doc = graph(search_extra=", max_concurrent: 3", graph_extra="").replace(
        'config: {prefix: "found:"}', 'config: {prefix: "", sleep: 0.1}'
    )
    t0 = time.perf_counter()
    result = sb.Pipeline.from_yaml(doc).run({"n": 9})
    elapsed = time.perf_counter() - t0
    assert LIVE["peak"] == 3
    assert 0.28 <= elapsed < 1.5  # three waves of 0.1 s, not nine
    assert result.output["count"] == 9


def test_the_graphs_max_concurrent_limits_items_too():
    doc = graph(graph_extra="          max_concurrent: 2").replace(
        'config: {prefix: "found:"}', 'config: {prefix: "", sleep: 0.05}'
    )
    sb.Pipeline.from_yaml(doc).run({"n": 6})
    assert LIVE["peak"] == 2


def test_each_item_retries_on_its_own():
    FAILS["q2"] = 1
    doc = graph(search_extra=", retry: {max_attempts: 3, initial_delay: 0.001}")
    result = sb.Pipeline.from_yaml(doc).run({"n": 4})
    attempts = {r.node_id: r.attempts for r in result.records if r.node_id.startswith("search[")}
    assert attempts == {"search[0]": 1, "search[1]": 1, "search[2]": 2, "search[3]": 1}
    assert sorted(CALLS) == ["q0", "q1", "q2", "q2", "q3"]


def test_an_item_failing_for_good_fails_the_node_naming_the_item():
    FAILS["q1"] = 5
    with pytest.raises(NodeExecutionError, match=r"search\[1\].*flaky q1"):
        sb.Pipeline.from_yaml(graph()).run({"n": 3})


def test_each_item_has_its_own_cache_entry():
    infra = """shops:
  infrastructure:
    config:
      caching: {enabled: true}"""
    pipe = sb.Pipeline.from_yaml(graph(infra=infra))
    first = pipe.run({"n": 3})
    assert sorted(CALLS) == ["q0", "q1", "q2"]
    CALLS.clear()
    second = pipe.run({"n": 3})
    assert CALLS == []
    assert [r.status for r in second.records if r.node_id.startswith("search[")] == ["cached"] * 3
    assert second.output == first.output
    # one entry per item (plus expand and collect; the map node itself is not cached)
    assert pipe.clear_cache() == 5


def test_an_empty_list_runs_no_item_and_gives_an_empty_list():
    result = sb.Pipeline.from_yaml(graph()).run({"n": 0})
    assert result.outputs["search"] == []
    assert result.output == {"count": 0, "hits": []}
    assert not [r for r in result.records if r.node_id.startswith("search[")]
    assert result.record("search").status == "ran"


def test_a_value_that_is_not_a_list_is_an_error_naming_node_and_value():
    doc = graph().replace("${expand.queries}", "${expand}")
    with pytest.raises(NodeExecutionError, match=r"for_each of node 'search'.*gave dict .*not a list"):
        sb.Pipeline.from_yaml(doc).run({"n": 2})


def test_a_thousand_items():
    doc = """
pipelines:
  big:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: dag
          graph_definition:
            nodes:
              - {id: numbers, technique: fe.range}
              - {id: double, technique: fe.quick, for_each: "${numbers.values}"}
            edges:
              - {from: numbers, to: double}
"""

    @sb.technique("fe.range")
    def _range(ctx):
        return {"values": list(range(1000))}

    result = sb.Pipeline.from_yaml(doc).run({})
    assert result.output == [{"n": 2 * i} for i in range(1000)]
    items = [r for r in result.records if r.node_id.startswith("double[")]
    assert len(items) == 1000
    assert {r.node_id for r in items} == {f"double[{i}]" for i in range(1000)}


def test_for_each_on_an_orchestration_step_and_a_pipeline_step():
    doc = """
pipelines:
  orch:
    steps:
      - use: workflow_orchestration.orchestration
        config:
          subtechnique: sequential
          steps:
            - {name: expand, technique: fe.expand}
            - {name: search, technique: fe.search, for_each: "${expand.queries}"}
  plain:
    steps:
      - {name: expand, use: fe.expand}
      - {name: search, use: fe.search, for_each: "${expand.queries}", config: {prefix: "p-"}}
"""
    orch = sb.Pipeline.from_yaml(doc, name="orch").run({"n": 2})
    assert [x["hit"] for x in orch.output] == ["q0", "q1"]
    plain = sb.Pipeline.from_yaml(doc, name="plain").run({"n": 3})
    assert [x["hit"] for x in plain.output] == ["p-q0", "p-q1", "p-q2"]


@pytest.mark.parametrize(
    ("edit", "message", "line"),
    [
        (
            ('config: {prefix: "found:"}', 'config: {prefix: "${item}"}'),
            None,
            None,
        ),
        (
            ('for_each: "${expand.queries}",', "max_concurrent: 2,"),
            r"max_concurrent on node 'search' limits a for_each node's items",
            12,
        ),
        (
            ('for_each: "${expand.queries}"', 'for_each: "queries"'),
            r"for_each must reference a list at run time",
            12,
        ),
        (
            ('for_each: "${expand.queries}"', 'for_each: "${expnd.queries}"'),
            r"unknown name 'expnd'.*did you mean 'expand'",
            12,
        ),
    ],
)
def test_load_time_errors_name_the_key_and_its_line(edit, message, line):
    doc = graph().replace(*edit)
    if message is None:  # ${item} where for_each is: fine
        sb.Pipeline.from_yaml(doc)
        return
    with pytest.raises(SpecError, match=message) as info:
        sb.Pipeline.from_yaml(doc)
    assert info.value.line == line


def test_item_outside_a_for_each_node_is_refused_at_load():
    doc = graph().replace(
        "{id: collect, technique: fe.collect}", '{id: collect, technique: fe.collect, config: {x: "${item}"}}'
    )
    with pytest.raises(
        SpecError, match=r"\$\{item\} is defined only in the config of a node with for_each.*'collect'"
    ) as info:
        sb.Pipeline.from_yaml(doc)
    assert info.value.line == 14


@sb.technique("fe.ask")
def _ask(ctx):
    return {"answer": ctx.interrupt("go on?")}


def test_an_item_failing_for_good_names_the_map_node_its_line_the_item_and_the_cause():
    FAILS["q1"] = 5
    with pytest.raises(NodeExecutionError) as info:
        sb.Pipeline.from_yaml(graph()).run({"n": 3})
    assert str(info.value) == (
        "line 12: pipelines.fe.steps[0].config.graph_definition.nodes[1]: node 'search', technique "
        "fe.search: for_each item 'search[1]' (item 'q1') failed after 1 attempt(s): RuntimeError: flaky q1 "
        "(attempt 1, iteration 1)"
    )
    assert (info.value.node_id, info.value.line) == ("search", 12)


def test_an_interrupt_inside_an_item_is_refused_naming_the_items():
    doc = graph().replace("technique: fe.search", "technique: fe.ask")
    with pytest.raises(NodeExecutionError) as info:
        sb.Pipeline.from_yaml(doc).run({"n": 2})
    assert str(info.value) == (
        "line 12: pipelines.fe.steps[0].config.graph_definition.nodes[1]: node 'search', technique fe.ask: "
        "ctx.interrupt inside a for_each item (search[0], search[1]) is not supported: ask before or after "
        "the for_each node (attempt 1, iteration 1)"
    )
