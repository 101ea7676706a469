"""Interrupts: ``ctx.interrupt(payload)`` pauses a run at a node (checkpointed); ``resume(value=)``
continues it, the same call returning the value, completed steps not run again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import SibylError

RAN: list[str] = []


@sb.technique("hi.draft")
def _draft(ctx):
    RAN.append(ctx.node_id)
    return {"text": f"draft for {ctx.input.get('topic', '?')}"}


@sb.technique("hi.approve_async")
async def _approve_async(ctx):
    RAN.append(ctx.node_id)
    (draft,) = ctx.upstream.values()
    await asyncio.sleep(0)
    answer = ctx.interrupt({"question": "publish?", "draft": draft["text"]})
    return {"approved": answer == "yes", "answer": answer}


@sb.technique("hi.approve_sync")
def _approve_sync(ctx):
    RAN.append(ctx.node_id)
    answer = ctx.interrupt("ok?")
    return {"approved": answer == "yes", "answer": answer}


@sb.technique("hi.two_questions")
def _two(ctx):
    RAN.append(ctx.node_id)
    name = ctx.interrupt("name?")
    age = ctx.interrupt(f"age of {name}?")
    return {"text": f"{name} is {age}"}


@sb.technique("hi.side")
async def _side(ctx):
    RAN.append(ctx.node_id)
    await asyncio.sleep(0.05)
    return {"text": "side done"}


@sb.technique("hi.publish")
def _publish(ctx):
    RAN.append(ctx.node_id)
    return {"text": "published" if ctx.results["approve"]["approved"] else "dropped"}


@pytest.fixture(autouse=True)
def _reset():
    RAN.clear()
    yield


def doc(approve: str = "hi.approve_async", checkpointing: str = "{enabled: true}") -> str:
    return f"""
pipelines:
  review:
    steps:
      - use: workflow_orchestration.graph
        config:
          subtechnique: dag
          graph_definition:
            nodes:
              - {{id: draft, technique: hi.draft}}
              - {{id: approve, technique: {approve}}}
              - {{id: side, technique: hi.side}}
              - {{id: publish, technique: hi.publish}}
            edges:
              - {{from: draft, to: approve}}
              - {{from: approve, to: publish}}
              - {{from: side, to: publish}}
shops:
  infrastructure:
    config:
      checkpointing: {checkpointing}
"""


@pytest.mark.parametrize("approve", ["hi.approve_async", "hi.approve_sync"])
def test_interrupt_pauses_and_resume_continues_without_rerunning_completed_steps(approve):
    pipe = sb.Pipeline.from_yaml(doc(approve))
    paused = pipe.run({"topic": "owls"}, workflow_id="wf-" + approve)
    assert paused.stopped_by == "interrupted"
    assert paused.interrupt.node_id == "approve"
    if approve == "hi.approve_async":
        assert paused.interrupt.payload == {"question": "publish?", "draft": "draft for owls"}
    else:
        assert paused.interrupt.payload == "ok?"
    assert paused.record("approve").status == "interrupted"
    assert "publish" not in paused.outputs
    # the independent branch ran to its end while approve waited
    assert sorted(RAN) == ["approve", "draft", "side"]

    RAN.clear()
    done = pipe.resume_sync("wf-" + approve, value="yes")
    assert done.stopped_by == "completed"
    assert done.output == {"text": "published"}
    assert done.outputs["approve"] == {"approved": True, "answer": "yes"}
    assert RAN == ["approve", "publish"]  # draft and side did not run again


def test_async_resume_and_a_node_asking_twice():
    d = doc("hi.two_questions").replace(
        "{id: publish, technique: hi.publish}", "{id: publish, technique: hi.side}"
    )
    pipe = sb.Pipeline.from_yaml(d)

    async def main():
        first = await pipe.execute({}, workflow_id="two")
        assert first.interrupt.payload == "name?"
        second = await pipe.resume("two", value="Ada")
        assert second.stopped_by == "interrupted"
        assert second.interrupt.payload == "age of Ada?"
        third = await pipe.resume("two", value=36)
        return third

    third = asyncio.run(main())
    assert third.stopped_by == "completed"
    assert third.outputs["approve"] == {"text": "Ada is 36"}


def test_resume_errors_say_what_is_wrong():
    pipe = sb.Pipeline.from_yaml(doc())
    pipe.run({}, workflow_id="done-wf")
    pipe.resume_sync("done-wf", value="yes")
    with pytest.raises(SibylError, match="not waiting for input"):
        pipe.resume_sync("done-wf", value="again")


def test_human_input_in_yaml_with_choices_asks_again_on_a_wrong_answer():
    d = """
pipelines:
  gate:
    steps:
      - {name: draft, use: hi.draft}
      - name: review
        use: workflow_orchestration.human_input
        config: {prompt: "Publish this draft?", choices: [approve, reject]}
      - name: publish
        use: workflow_orchestration.passthrough
        condition: "${review.answer} == 'approve'"
shops:
  infrastructure:
    config:
      checkpointing: {enabled: true}
"""
    pipe = sb.Pipeline.from_yaml(d)
    paused = pipe.run({"topic": "bats"}, workflow_id="gate1")
    assert paused.interrupt.payload == {
        "prompt": "Publish this draft?",
        "choices": ["approve", "reject"],
        "upstream": {"draft": "draft for bats"},
    }
    again = pipe.resume_sync("gate1", value="maybe")
    assert again.stopped_by == "interrupted"
    assert again.interrupt.payload["error"] == "'maybe' is not one of: approve, reject"
    done = pipe.resume_sync("gate1", value="approve")
    assert done.outputs["review"]["answer"] == "approve"
    assert done.record("publish").status == "ran"


def test_without_checkpointing_a_paused_run_resumes_in_the_same_process():
    pipe = sb.Pipeline.from_yaml(doc(checkpointing="{enabled: false}"))
    paused = pipe.run({"topic": "x"})
    assert paused.stopped_by == "interrupted"
    done = pipe.resume_sync(paused.workflow_id, value="no")
    assert done.output == {"text": "dropped"}


def test_the_stream_shows_the_interrupt_and_ends_there():
    pipe = sb.Pipeline.from_yaml(doc())
    events = list(pipe.stream_sync({"topic": "y"}, workflow_id="st1"))
    kinds = [e.kind for e in events]
    assert "interrupted" in kinds
    assert kinds[-1] == "run_finished"
    assert events[-1].data["stopped_by"] == "interrupted"
    ev = next(e for e in events if e.kind == "interrupted")
    assert ev.node_id == "approve" and ev.data["payload"]["question"] == "publish?"


# -- across processes, every checkpoint store ------------------------------------------------------
PROC_DOC = """
pipelines:
  gate:
    steps:
      - {{name: ask, use: workflow_orchestration.human_input, config: {{prompt: "Which colour?", choices: [red, blue]}}}}
      - {{name: echo, use: workflow_orchestration.passthrough}}
shops:
  infrastructure:
    config:
      checkpointing: {checkpointing}
"""

SCRIPT = """
import json, sys
import sibyl_nb as sb
doc, mode, wf = sys.argv[1], sys.argv[2], sys.argv[3]
pipe = sb.Pipeline.from_yaml(open(doc).read())
if mode == "start":
    r = pipe.run({{"query": "colour"}}, workflow_id=wf)
else:
    r = pipe.resume_sync(wf, value=mode)
print(json.dumps({{"stopped_by": r.stopped_by, "interrupt": r.interrupt.as_dict() if r.interrupt else None,
                  "output": r.output, "ran": r.ran()}}))
"""


def _proc(tmp_path, doc_text: str, mode: str, wf: str) -> dict:
    path = tmp_path / "gate.yaml"
    path.write_text(doc_text)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format()), str(path), mode, wf],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("storage", ["sqlite", "postgres", "diskcache", "redis"])
def test_an_interrupt_resumed_in_a_fresh_process(storage, tmp_path, unique, request):
    if storage == "sqlite":
        cfg = f'{{enabled: true, storage: database, database_url: "sqlite:///{tmp_path / "cp.db"}"}}'
    elif storage == "postgres":
        cfg = (
            f'{{enabled: true, storage: database, database_url: "{request.getfixturevalue("postgres_url")}"}}'
        )
    elif storage == "redis":
        cfg = f'{{enabled: true, storage: redis, redis_url: "{request.getfixturevalue("redis_url")}"}}'
    else:
        cfg = f'{{enabled: true, storage: diskcache, path: "{tmp_path / "cp"}"}}'
    text = PROC_DOC.format(checkpointing=cfg)
    wf = f"proc-{unique}"
    first = _proc(tmp_path, text, "start", wf)
    assert first["stopped_by"] == "interrupted"
    assert first["interrupt"]["node_id"] == "ask"
    assert first["interrupt"]["payload"]["prompt"] == "Which colour?"
    second = _proc(tmp_path, text, "blue", wf)
    assert second["stopped_by"] == "completed"
    assert second["output"]["answer"] == "blue"
    assert second["ran"] == ["ask", "echo"]  # the records the resumed run holds: ask (now answered), echo


def test_an_interrupt_inside_a_for_each_item_or_a_subgraph_is_refused_naming_it():
    d = """
pipelines:
  inner:
    steps:
      - {name: ask, use: hi.approve_sync}
  outer:
    inputs: [xs]
    steps:
      - {name: each, use: hi.approve_sync, for_each: "${xs}"}
  nested:
    steps:
      - {name: sub, use: pipeline.inner}
"""
    from sibyl_nb.errors import NodeExecutionError

    with pytest.raises(
        NodeExecutionError, match=r"ctx.interrupt inside a for_each item \(each\[0\], each\[1\]\)"
    ):
        sb.Pipeline.from_yaml(d, name="outer").run({"xs": [1, 2]})
    with pytest.raises(NodeExecutionError, match=r"ctx.interrupt inside a subgraph \(sub/ask\)"):
        sb.Pipeline.from_yaml(d, name="nested").run({})
