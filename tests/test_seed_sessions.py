"""The seed's session and context examples, run through the engine across turns."""

from __future__ import annotations

import pytest
from seed_examples import block

import sibyl_nb as sb


def turns(pipe, messages, **fields):
    return [pipe.run({**fields, "message": m}) for m in messages]


def test_conversational_agent_remembers_the_topic_across_turns(unique):
    pipe = sb.Pipeline.from_yaml(block("Multi-Turn Conversational Agent"))
    first, second = turns(pipe, ["What is Python?", "What's it used for?"], session_id=unique)
    assert "python" in first.text.lower()
    assert second.outputs["session_management"]["history_length"] == 2
    rewritten = second.outputs["query_processing"]["query"]
    assert "python" in rewritten.lower() and rewritten != "What's it used for?"
    assert "python" in second.text.lower() and "used" in second.text.lower()
    # the hierarchical context step drew its token allocation, summing to the budget
    (alloc,) = second.allocations
    assert alloc["strategy"] == "hierarchical" and sum(alloc["allocation"].values()) == 8000


def test_a_new_session_starts_empty(unique):
    pipe = sb.Pipeline.from_yaml(block("Multi-Turn Conversational Agent"))
    pipe.run({"session_id": unique, "message": "What is Python?"})
    other = pipe.run({"session_id": unique + "x", "message": "What's it used for?"})
    assert other.outputs["session_management"]["history_length"] == 0


def test_memory_sessions_on_redis_keyed_by_user_id(redis_url, monkeypatch, unique):
    monkeypatch.setenv("REDIS_URL", redis_url)
    pipe = sb.Pipeline.from_yaml(block("Memory-Based Sessions"))
    a, b = turns(pipe, ["What is Python?", "What's it used for?"], user_id=unique)
    assert a.outputs["session_management"]["session_id"] == unique
    assert a.outputs["session_management"]["new_session"] is True
    assert b.outputs["session_management"]["history_length"] >= 1
    assert b.outputs["session_management"]["storage"] == "redis"


def test_stateless_sessions_remember_nothing():
    pipe = sb.Pipeline.from_yaml(block("Stateless Sessions"))
    _, second = turns(pipe, ["What is Python?", "What's it used for?"], session_id="s")
    assert second.outputs["session_management"]["history_length"] == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_persistent_sessions_use_database_url(backend, request, monkeypatch, unique):
    if backend == "postgres":
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_url"))
    else:
        monkeypatch.delenv("DATABASE_URL", raising=False)  # unset -> the embedded SQLite default
    pipe = sb.Pipeline.from_yaml(block("Persistent Sessions"))
    _, second = turns(pipe, ["What is Python?", "What's it used for?"], session_id=unique)
    out = second.outputs["session_management"]
    assert out["history_length"] >= 1 and out["storage"] in ("database", "sql", "sqlite", "postgres")


def test_sliding_window_keeps_the_last_messages(unique):
    pipe = sb.Pipeline.from_yaml(block("Sliding Window Sessions"))
    results = turns(pipe, [f"Tell me fact {i} about Python" for i in range(8)], session_id=unique)
    assert results[-1].outputs["session_management"]["history_length"] <= 10


@pytest.mark.parametrize(
    "heading,strategy",
    [
        ("Window-Based Context", "window"),
        ("Compression-Based Context", "compression"),
        ("Summary-Based Context", "summary"),
        ("Hierarchical Context", "hierarchical"),
    ],
)
def test_context_examples_allocate_exactly_max_tokens(heading, strategy):
    r = sb.Pipeline.from_yaml(block(heading)).run({"message": "What is Python used for?"})
    out = r.outputs["context_management"]
    assert out["strategy"] == strategy
    assert sum(out["allocation"].values()) == out["max_tokens"]
