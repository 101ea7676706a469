"""Subgraphs: ``technique: pipeline.<name>`` / ``use: pipeline.<name>`` runs another pipeline of the
same document as one node, any number of times; its records appear nested (ids prefixed)."""

from __future__ import annotations

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError, SpecError

RUNS: list[str] = []


@sb.technique("sg.write")
def _write(ctx):
    RUNS.append(ctx.node_id)
    return {"text": f"draft about {ctx.input['topic']}"}


@sb.technique("sg.review")
def _review(ctx):
    RUNS.append(ctx.node_id)
    (draft,) = ctx.upstream.values()
    if "poison" in draft["text"]:
        raise ValueError("cannot review poison")
    return {"text": draft["text"].upper(), "score": len(draft["text"])}


@sb.technique("sg.merge")
def _merge(ctx):
    return {"text": " | ".join(v["text"] for v in ctx.upstream.values())}


DOC = """
pipelines:
  write_and_review:
    steps:
      - {name: draft, use: sg.write}
      - {name: check, use: sg.review}
  report:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: dag
          graph_definition:
            nodes:
              - {id: first, technique: pipeline.write_and_review, config: {input: {topic: "${topic_a}"}}}
              - {id: second, technique: pipeline.write_and_review, config: {input: {topic: "${topic_b}"}}}
              - {id: merge, technique: sg.merge}
            edges:
              - {from: first, to: merge}
              - {from: second, to: merge}
  chained:
    steps:
      - {name: once, use: pipeline.write_and_review}
      - {name: twice, use: pipeline.write_and_review, config: {input: {topic: "${once.text}"}}}
"""


@pytest.fixture(autouse=True)
def _reset():
    RUNS.clear()
    yield


def test_the_same_subgraph_twice_in_one_graph_keeps_their_records_and_outputs_apart():
    pipe = sb.Pipeline.from_yaml(DOC, name="report")
    result = pipe.run({"topic_a": "cats", "topic_b": "dogs"})
    assert result.output == {"text": "DRAFT ABOUT CATS | DRAFT ABOUT DOGS"}
    assert result.outputs["first"] == {"text": "DRAFT ABOUT CATS", "score": 16}
    assert result.outputs["second/draft"] == {"text": "draft about dogs"}
    ids = [r.node_id for r in result.records]
    for prefix in ("first", "second"):
        inner = [i for i in ids if i.startswith(prefix + "/")]
        assert inner == [f"{prefix}/draft", f"{prefix}/check"]
        # the inner records come before the subgraph node's own
        assert ids.index(f"{prefix}/check") < ids.index(prefix)
    assert sorted(RUNS) == ["check", "check", "draft", "draft"]


def test_as_a_pipeline_step_with_the_outer_input_and_with_an_input_template():
    result = sb.Pipeline.from_yaml(DOC, name="chained").run({"topic": "owls"})
    assert result.outputs["once"] == {"text": "DRAFT ABOUT OWLS", "score": 16}
    assert result.output["text"] == "DRAFT ABOUT DRAFT ABOUT OWLS"
    assert [r.node_id for r in result.records if r.status == "ran"] == [
        "once/draft",
        "once/check",
        "once",
        "twice/draft",
        "twice/check",
        "twice",
    ]


def test_events_carry_prefixed_ids_as_they_happen():
    pipe = sb.Pipeline.from_yaml(DOC, name="report")
    finished = [
        e.node_id for e in pipe.stream_sync({"topic_a": "a", "topic_b": "b"}) if e.kind == "node_finished"
    ]
    assert finished.index("first/draft") < finished.index("first/check") < finished.index("first")
    assert set(finished) == {
        "first/draft",
        "first/check",
        "first",
        "second/draft",
        "second/check",
        "second",
        "merge",
    }


def test_an_inner_failure_names_the_inner_node():
    pipe = sb.Pipeline.from_yaml(DOC, name="report")
    with pytest.raises(NodeExecutionError) as info:
        pipe.run({"topic_a": "cats", "topic_b": "poison"})
    text = str(info.value)
    assert "second" in text and "'second/check'" in text and "cannot review poison" in text
    assert info.value.node_id == "second"


def test_checkpoints_hold_the_nested_records(tmp_path):
    pipe = sb.Pipeline.from_yaml(DOC, name="report").configure(checkpointing={"enabled": True})
    pipe.run({"topic_a": "x", "topic_b": "y"}, workflow_id="sg1")
    cp = pipe.load_checkpoint("sg1")
    assert {"first/draft", "first/check", "second/draft", "second/check", "first", "second", "merge"} <= set(
        cp.completed
    )
    assert cp.restore["results"]["first/check"] == {"text": "DRAFT ABOUT X", "score": 13}


@pytest.mark.parametrize(
    ("doc", "message", "line"),
    [
        (
            """
pipelines:
  a:
    steps:
      - {name: x, use: pipeline.nope}
  nope2:
    steps:
      - {name: y, use: sg.write}
""",
            r"uses pipeline 'nope', which this document does not define.*did you mean 'nope2'",
            5,
        ),
        (
            """
pipelines:
  a:
    steps:
      - {name: x, use: pipeline.b}
  b:
    steps:
      - {name: y, use: pipeline.a}
""",
            r"pipeline 'a' uses itself: a -> b -> a",
            5,
        ),
        (
            """
pipelines:
  a:
    steps:
      - {name: x, use: sg.write}
  b:
    steps:
      - {name: y, use: pipeline.a, config: {inputs: {}}}
""",
            r"unknown key 'inputs' in the config of subgraph node 'y'.*did you mean 'input'",
            8,
        ),
    ],
)
def test_load_errors_name_the_line(doc, message, line):
    with pytest.raises(SpecError, match=message) as info:
        sb.load_document(doc) if hasattr(sb, "load_document") else sb.Pipeline.from_yaml(doc, name="a")
    assert info.value.line == line


@sb.technique("sg.ask")
def _ask(ctx):
    return {"text": ctx.interrupt("go on?")}


def test_an_inner_failure_names_the_outer_node_its_line_and_the_inner_node_exactly():
    with pytest.raises(NodeExecutionError) as info:
        sb.Pipeline.from_yaml(DOC, name="report").run({"topic_a": "cats", "topic_b": "poison"})
    assert str(info.value) == (
        "line 15: pipelines.report.steps[0].config.graph_definition.nodes[1]: node 'second', technique "
        "pipeline.write_and_review: subgraph pipeline 'write_and_review': node 'second/check' (sg.review, "
        "attempt 1) failed: ValueError: cannot review poison (attempt 1, iteration 1)"
    )
    assert (info.value.node_id, info.value.line) == ("second", 15)


def test_an_interrupt_inside_a_subgraph_is_refused_naming_the_inner_node():
    doc = DOC.replace("use: sg.review}", "use: sg.ask}")
    with pytest.raises(NodeExecutionError) as info:
        sb.Pipeline.from_yaml(doc, name="report").run({"topic_a": "a", "topic_b": "b"})
    assert str(info.value) == (
        "line 14: pipelines.report.steps[0].config.graph_definition.nodes[0]: node 'first', technique "
        "pipeline.write_and_review: subgraph pipeline 'write_and_review': ctx.interrupt inside a subgraph "
        "(first/check) is not supported: put the question in the outer pipeline (attempt 1, iteration 1)"
    )
