"""``workflow_orchestration.session_management``: the four modes, across turns, on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_stores import cleanup, open_backend, store_config

from sibyl_nb.sessions import SessionManager, open_session, policy_from_config
from sibyl_nb.sessions.technique import reply_text
from sibyl_nb.stores import close_shared_stores, open_store
from sibyl_nb.techniques.registry import get_technique
from sibyl_nb.testing import StandaloneRun, make_context

NAME = "workflow_orchestration.session_management"


class Result:
    def __init__(self, text):
        self.text = text


@pytest.fixture(autouse=True)
def _fresh_shared_stores():
    close_shared_stores()
    yield
    close_shared_stores()


def turn(config, message, reply, *, input_extra=None, succeed=True):
    """One pipeline run: the session step, then (if the run succeeds) the deferred callbacks."""
    run = StandaloneRun(input={"message": message, **(input_extra or {})})
    ctx = make_context(config, run=run, technique=NAME, node_id="session")
    out = asyncio.run(get_technique(NAME).fn(ctx))
    seen = {k: run.session.get(k) for k in ("session_id", "conversation_history", "conversation_summary")}
    if succeed:

        async def finish():
            for cb in run.deferred:
                res = cb(Result(reply))
                if asyncio.iscoroutine(res):
                    await res

        asyncio.run(finish())
    return out, seen, run


def contents(history):
    return [(m["role"], m["content"]) for m in history]


def test_registered():
    info = get_technique(NAME)
    assert info.subtechniques == ("memory", "stateless", "persistent", "sliding_window")
    assert "session_id" in info.config_schema and "history_length" in info.outputs


@pytest.mark.parametrize("backend", ["memory", "diskcache", "sqlite", "redis", "postgres"])
def test_second_run_sees_the_first_turn(backend, unique, request):
    storage, store_cfg = store_config(backend, unique, request)
    cfg = {"subtechnique": "memory", "timeout": 3600, "max_messages": 100, "storage": storage, **store_cfg}
    try:
        out1, seen1, run1 = turn(
            cfg,
            "What is Python?",
            "Python is a programming language.",
            input_extra={"session_id": "user_123"},
        )
        assert out1["new_session"] is True and out1["history_length"] == 0
        assert seen1 == {"session_id": "user_123", "conversation_history": [], "conversation_summary": ""}
        assert len(run1.deferred) == 1
        out2, seen2, _ = turn(
            cfg,
            "What's it used for?",
            "Python is used for web development.",
            input_extra={"session_id": "user_123"},
        )
        assert out2["new_session"] is False and out2["history_length"] == 2
        assert contents(seen2["conversation_history"]) == [
            ("user", "What is Python?"),
            ("assistant", "Python is a programming language."),
        ]
        assert all(
            isinstance(m["tokens"], int) for m in seen2["conversation_history"]
        )  # counted once, stored
        _, seen3, _ = turn(cfg, "Thanks", "You're welcome.", input_extra={"session_id": "user_123"})
        assert len(seen3["conversation_history"]) == 4
        _, other, _ = turn(cfg, "Hi", "Hello", input_extra={"session_id": "someone_else"})
        assert other["conversation_history"] == []
    finally:
        if backend in ("redis", "postgres"):
            close_shared_stores()
            cleanup(open_backend(backend, unique, request))


def test_templated_session_id_from_config_wins_over_input():
    cfg = {"subtechnique": "memory", "storage": "memory", "session_id": "user_42"}
    turn(cfg, "Hello", "Hi there", input_extra={"session_id": "ignored"})
    out, seen, _ = turn(cfg, "Again", "Yes", input_extra={"session_id": "ignored"})
    assert out["session_id"] == "user_42" and seen["session_id"] == "user_42"
    assert len(seen["conversation_history"]) == 2


def test_without_session_id_a_new_session_is_started():
    out, seen, _ = turn({"subtechnique": "memory", "storage": "memory"}, "Hello", "Hi")
    assert out["new_session"] is True and len(out["session_id"]) == 32
    out2, seen2, _ = turn(
        {"subtechnique": "memory", "storage": "memory", "session_id": out["session_id"]}, "More", "Sure"
    )
    assert out2["history_length"] == 2


def test_failed_run_stores_nothing():
    cfg = {"subtechnique": "memory", "storage": "memory", "session_id": "f"}
    turn(cfg, "Will fail", "never", succeed=False)
    out, seen, _ = turn(cfg, "Second", "ok")
    assert out["new_session"] is True and seen["conversation_history"] == []


def test_the_stored_user_message_is_the_original_not_the_rewrite():
    cfg = {"subtechnique": "memory", "storage": "memory", "session_id": "rw"}
    run = StandaloneRun(input={"message": "What's it used for?"})
    ctx = make_context(cfg, run=run, technique=NAME)
    asyncio.run(get_technique(NAME).fn(ctx))
    run.session["query"] = "What is Python used for?"  # a rewriting step ran later
    asyncio.run(run.deferred[0](Result("For many things.")))
    _, seen, _ = turn(cfg, "x", "y")
    assert seen["conversation_history"][0]["content"] == "What's it used for?"


def test_stateless_loads_and_stores_nothing():
    cfg = {"subtechnique": "stateless"}
    out, seen, run = turn(cfg, "Hello", "Hi", input_extra={"session_id": "s"})
    assert run.deferred == []
    assert out["history_length"] == 0 and out["storage"] is None and out["mode"] == "stateless"
    assert seen["conversation_history"] == [] and seen["conversation_summary"] == ""


def test_persistent_defaults_to_sqlite_with_the_seed_table(tmp_path):
    cfg = {
        "subtechnique": "persistent",
        "storage": "database",
        "database_url": None,
        "table": "conversations",
        "session_id": "p1",
        "user_id": "alice",
    }
    out, _, _ = turn(cfg, "Remember me", "I will")
    assert out["storage"] == "sql"
    out, seen, _ = turn(cfg, "Do you?", "Yes")
    assert contents(seen["conversation_history"])[0] == ("user", "Remember me")
    assert out["user_id"] == "alice" and out["timeout"] is None
    close_shared_stores()
    import sqlite3

    db = sqlite3.connect(tmp_path / ".sibyl" / "sessions.db")
    row = db.execute("SELECT session_id, user_id, expires_at FROM conversations").fetchone()
    assert row == ("p1", "alice", None)
    db.close()


def test_persistent_on_postgres(unique, request):
    url = request.getfixturevalue("postgres_url")
    cfg = {
        "subtechnique": "persistent",
        "storage": "database",
        "database_url": url.replace("+psycopg", ""),
        "table": f"conv_{unique}",
        "kv_table": f"kv_{unique}",
        "session_id": "pg1",
    }
    try:
        turn(cfg, "Hello postgres", "Hello")
        out, seen, _ = turn(cfg, "Again", "Again")
        assert out["history_length"] == 2 and out["storage"] == "sql"
    finally:
        close_shared_stores()
        store = open_store("postgres", database_url=url, table=f"conv_{unique}", kv_table=f"kv_{unique}")
        cleanup(store)


def test_sliding_window_keeps_last_messages_and_summarises_older():
    cfg = {
        "subtechnique": "sliding_window",
        "window_size": 4,
        "include_summary": True,
        "storage": "memory",
        "session_id": "sw",
    }
    for i in range(5):
        turn(cfg, f"Question {i} about topic {i}?", f"Answer {i} explains topic {i}.")
    out, seen, _ = turn(cfg, "Next", "ok")
    assert contents(seen["conversation_history"]) == [
        ("user", "Question 3 about topic 3?"),
        ("assistant", "Answer 3 explains topic 3."),
        ("user", "Question 4 about topic 4?"),
        ("assistant", "Answer 4 explains topic 4."),
    ]
    assert "topic 0" in seen["conversation_summary"] or "topic 1" in seen["conversation_summary"]
    assert out["summary_covers"] == 6  # 3 older turns folded into the stored summary

    plain = {**cfg, "include_summary": False, "session_id": "sw2"}
    for i in range(5):
        turn(plain, f"Q{i}", f"A{i}")
    _, seen, _ = turn(plain, "Next", "ok")
    assert len(seen["conversation_history"]) == 4 and seen["conversation_summary"] == ""


def test_memory_max_messages_with_summarization_keeps_summary_beside_messages():
    cfg = {
        "subtechnique": "memory",
        "storage": "memory",
        "session_id": "mm",
        "max_messages": 4,
        "summarization": True,
    }
    turn(cfg, "What is Python?", "Python is a programming language created by Guido van Rossum.")
    turn(cfg, "What is it used for?", "Python is used for web development and data science.")
    turn(cfg, "Who uses it?", "Google and Instagram use Python.")
    out, seen, _ = turn(cfg, "Thanks", "Welcome", succeed=False)
    assert out["stored_messages"] == 4
    assert contents(seen["conversation_history"])[0] == ("user", "What is it used for?")
    assert "What is Python?" in seen["conversation_summary"]
    mgr = SessionManager(policy_from_config(cfg))
    data = mgr.store.load("mm")
    assert data.summary == seen["conversation_summary"] and data.summary_covers == 2
    assert len(data.messages) == 4  # raw messages kept as they were


def test_memory_max_messages_without_summarization_just_trims():
    cfg = {"subtechnique": "memory", "storage": "memory", "session_id": "mt", "max_messages": 2}
    for i in range(3):
        turn(cfg, f"q{i}", f"a{i}")
    _, seen, _ = turn(cfg, "x", "y")
    assert contents(seen["conversation_history"]) == [("user", "q2"), ("assistant", "a2")]
    assert seen["conversation_summary"] == ""


def test_memory_max_tokens_compresses_then_leaves_out():
    long_answer = " ".join(
        f"Sentence {i} talks about Python feature number {i} in some detail." for i in range(12)
    )
    cfg = {
        "subtechnique": "memory",
        "storage": "memory",
        "session_id": "mx",
        "max_tokens": 400,
        "compression": True,
        "summarization": True,
        "keep_recent": 2,
    }
    for i in range(4):
        turn(cfg, f"Tell me about feature {i}?", long_answer)
    out, seen, _ = turn(cfg, "ok", "ok")
    hist = seen["conversation_history"]
    from sibyl_nb.context import get_counter

    c = get_counter()
    assert sum(c.message_tokens(m) for m in hist) <= 400
    assert out["compressed"] >= 1 and any(m.get("compressed") for m in hist)
    assert not any(m.get("compressed") for m in hist[-2:])  # the newest stay verbatim
    if out["left_out"]:
        assert seen["conversation_summary"]
    assert out["stored_messages"] == 8  # max_tokens bounds the view; the store keeps the raw turns


def test_timeout_expires_the_session():
    cfg = {"subtechnique": "memory", "storage": "diskcache", "session_id": "t", "timeout": 0.3}
    turn(cfg, "Hello", "Hi")
    out, _, _ = turn(cfg, "Still there?", "Yes")
    assert out["new_session"] is False
    time.sleep(0.5)
    out, seen, _ = turn(cfg, "And now?", "New session")
    assert out["new_session"] is True and seen["conversation_history"] == []


def test_open_session_for_notebook_use():
    mgr = open_session("memory", storage="memory", max_messages=10)
    assert mgr.load("nb").new_session
    mgr.record_turn("nb", "hi", "hello")
    view = mgr.load("nb")
    assert contents(view.history) == [("user", "hi"), ("assistant", "hello")]


def test_reply_text_variants():
    assert reply_text(Result("a")) == "a"

    class R:
        text = None
        output = {"answer": "b"}

    assert reply_text(R()) == "b"
    assert reply_text({"response": "c"}) == "c"
    assert reply_text(object()) is None


def test_bad_config_is_reported():
    from sibyl_nb.errors import SibylError, StoreError

    with pytest.raises(SibylError, match="max_messages"):
        policy_from_config({"subtechnique": "memory", "max_messages": -1})
    with pytest.raises(SibylError, match="unknown session mode"):
        policy_from_config({"subtechnique": "forever"})
    with pytest.raises(StoreError, match="unknown storage"):
        turn({"subtechnique": "memory", "storage": "mongo"}, "x", "y")
