"""``pipe.stream`` / ``stream_sync``: the run's events as an iterator, in the order observers see them."""

from __future__ import annotations

import asyncio
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError

STARTED: list[str] = []


@sb.technique("st.echo")
def _echo(ctx):
    return {"text": f"{ctx.node_id}:{ctx.config.get('say', '')}"}


@sb.technique("st.slow")
async def _slow(ctx):
    STARTED.append(ctx.node_id)
    await asyncio.sleep(ctx.config.get("sleep", 0.05))
    return {"text": ctx.node_id}


@sb.technique("st.boom")
def _boom(ctx):
    raise RuntimeError("boom")


CHAIN = """
pipelines:
  chain:
    steps:
      - {name: a, use: st.echo, config: {say: one}}
      - {name: b, use: st.echo, config: {say: two}}
      - {name: c, use: st.echo, config: {say: three}}
"""


def test_stream_sync_yields_every_event_in_order_and_the_result_last():
    pipe = sb.Pipeline.from_yaml(CHAIN)
    events = list(pipe.stream_sync({}))
    seen = [(e.kind, e.node_id) for e in events if e.kind != "custom"]
    assert seen == [
        ("run_started", None),
        ("node_started", "a"),
        ("node_finished", "a"),
        ("node_started", "b"),
        ("node_finished", "b"),
        ("node_started", "c"),
        ("node_finished", "c"),
        ("run_finished", None),
    ]
    result = events[-1].data["result"]
    assert result.output == {"text": "c:three"}
    assert [e.data["output"] for e in events if e.kind == "node_finished"] == [
        {"text": "a:one"},
        {"text": "b:two"},
        {"text": "c:three"},
    ]


def test_async_stream_sees_events_while_the_run_is_going():
    doc = """
pipelines:
  slow:
    steps:
      - {name: s1, use: st.slow, config: {sleep: 0.2}}
      - {name: s2, use: st.slow, config: {sleep: 0.2}}
"""
    pipe = sb.Pipeline.from_yaml(doc)

    async def main():
        stamps = []
        t0 = time.perf_counter()
        async for ev in pipe.stream({}):
            stamps.append((ev.kind, ev.node_id, time.perf_counter() - t0))
        return stamps

    stamps = asyncio.run(main())
    finished_s1 = next(t for k, n, t in stamps if k == "node_finished" and n == "s1")
    end = stamps[-1][2]
    assert stamps[-1][0] == "run_finished"
    assert end - finished_s1 >= 0.15  # s1's event reached us while s2 was still sleeping


def test_breaking_out_of_the_stream_cancels_the_run():
    STARTED.clear()
    doc = """
pipelines:
  slow:
    steps:
      - {name: s1, use: st.slow, config: {sleep: 0.01}}
      - {name: s2, use: st.slow, config: {sleep: 5}}
      - {name: s3, use: st.slow, config: {sleep: 0.01}}
"""
    pipe = sb.Pipeline.from_yaml(doc)
    t0 = time.perf_counter()
    for ev in pipe.stream_sync({}):
        if ev.kind == "node_started" and ev.node_id == "s2":
            break
    assert time.perf_counter() - t0 < 3
    assert STARTED == ["s1", "s2"]


def test_a_failing_run_yields_run_failed_then_raises_the_runs_error():
    doc = """
pipelines:
  bad:
    steps:
      - {name: ok, use: st.echo}
      - {name: broken, use: st.boom}
"""
    kinds = []
    with pytest.raises(NodeExecutionError, match="broken.*boom"):
        for ev in sb.Pipeline.from_yaml(doc).stream_sync({}):
            kinds.append(ev.kind)
    assert kinds[-2:] == ["node_failed", "run_failed"]


def test_stream_sync_inside_a_running_loop_uses_a_helper_thread():
    pipe = sb.Pipeline.from_yaml(CHAIN)

    async def inside_a_cell():
        return [e.kind for e in pipe.stream_sync({})]

    kinds = asyncio.run(inside_a_cell())
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("node_finished") == 3


def test_a_local_generation_streams_its_answer_as_token_events():
    doc = """
pipelines:
  gen:
    steps:
      - {name: answer, use: ai_generation.generation}
"""
    events = list(sb.Pipeline.from_yaml(doc).stream_sync({"query": "What is Python used for?"}))
    tokens = [e.data["delta"] for e in events if e.kind == "token"]
    assert tokens and "".join(tokens) == events[-1].data["result"].output["text"]
