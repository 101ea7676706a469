"""Every store backend against the real thing: memory, diskcache, SQLite, Redis, PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from sibyl_nb.errors import StoreError
from sibyl_nb.stores import SessionData, canonical_storage, mask_url, open_store, shared_store
from sibyl_nb.stores.sql import normalize_database_url

# ------------------------------------------------------------------------------------ helpers
# (also imported by test_stores_concurrency.py and test_sessions.py)

BACKENDS = ("memory", "diskcache", "sqlite", "redis", "postgres")


def store_config(backend: str, unique: str, request: Any) -> tuple[str, dict[str, Any]]:
    """(storage name, config) for ``backend``; Redis/PostgreSQL get per-test prefixes / table names."""
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        return "redis", {"redis_url": url, "key_prefix": f"{unique}:s:", "kv_prefix": f"{unique}:kv:"}
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        return "postgres", {"database_url": url, "table": f"conv_{unique}", "kv_table": f"kv_{unique}"}
    if backend == "sqlite":
        return "sqlite", {}
    return backend, {}


def cleanup(store: Any) -> None:
    """Drop tables / keys a test created on a shared server."""
    if store.backend == "sql" and store.dialect == "postgresql":
        store.drop_tables()
    elif store.backend == "redis":
        r = store._r
        for pattern in (store.key_prefix + "*", store.kv_prefix + "*"):
            keys = list(r.scan_iter(match=pattern, count=1000))
            if keys:
                r.delete(*keys)
    store.close()


def open_backend(backend: str, unique: str, request: Any, **extra: Any) -> Any:
    storage, cfg = store_config(backend, unique, request)
    return open_store(storage, **cfg, **extra)


@pytest.fixture(params=BACKENDS)
def store(request, unique):
    s = open_backend(request.param, unique, request)
    yield s
    cleanup(s)


@pytest.fixture(params=BACKENDS)
def ttl_store(request, unique):
    s = open_backend(request.param, unique, request, ttl=0.8)  # room for a loaded machine
    yield s
    cleanup(s)


def msg(i, role="user"):
    return {"role": role, "content": f"message {i}"}


# ------------------------------------------------------------------------------------ message log
def test_append_load_roundtrip(store):
    assert store.load("s1") is None
    assert store.append("s1", msg(0), user_id="u1") == 1
    assert store.append("s1", [msg(1, "assistant"), msg(2)]) == 3
    data = store.load("s1")
    assert isinstance(data, SessionData)
    assert [m["content"] for m in data.messages] == ["message 0", "message 1", "message 2"]
    assert data.messages[1]["role"] == "assistant"
    assert data.user_id == "u1"
    assert data.summary == "" and data.summary_covers == 0
    assert data.created_at <= data.updated_at <= time.time() + 1
    assert data.expires_at is None
    assert store.sessions() == ["s1"]


def test_unicode_and_nested_values_survive(store):
    m = {"role": "user", "content": "héllo — 你好 🐍", "meta": {"k": [1, 2.5, None, True]}}
    store.append("u", m)
    assert store.load("u").messages == [m]


def test_summary_is_stored_beside_raw_messages(store):
    store.append("s", [msg(i) for i in range(5)])
    store.set_summary("s", "the user counted to four", covers=0)
    data = store.load("s")
    assert data.summary == "the user counted to four"
    assert len(data.messages) == 5  # the raw messages are untouched
    store.append("s", msg(5))
    data = store.load("s")
    assert data.summary == "the user counted to four" and len(data.messages) == 6
    assert store.set_summary("missing", "x") is None
    assert store.load("missing") is None


def test_trim_folds_dropped_messages_into_summary(store):
    store.append("s", [msg(i) for i in range(10)])
    dropped = store.trim(
        "s", 3, fold=lambda old, d: (old + " " if old else "") + ",".join(m["content"][-1] for m in d)
    )
    assert [m["content"] for m in dropped] == [f"message {i}" for i in range(7)]
    data = store.load("s")
    assert [m["content"] for m in data.messages] == ["message 7", "message 8", "message 9"]
    assert data.summary == "0,1,2,3,4,5,6" and data.summary_covers == 7
    store.append("s", [msg(10), msg(11)])
    store.trim("s", 3, fold=lambda old, d: old + "|" + ",".join(m["content"][-2:].strip() for m in d))
    data = store.load("s")
    assert data.summary == "0,1,2,3,4,5,6|7,8" and data.summary_covers == 9
    assert [m["content"] for m in data.messages] == ["message 9", "message 10", "message 11"]


def test_trim_without_fold_and_replace(store):
    store.append("s", [msg(i) for i in range(4)])
    assert len(store.trim("s", 10)) == 0
    assert len(store.trim("s", 1)) == 3
    assert [m["content"] for m in store.load("s").messages] == ["message 3"]
    store.replace("s", [msg(7), msg(8)], summary="replaced", metadata={"topic": "x"})
    data = store.load("s")
    assert [m["content"] for m in data.messages] == ["message 7", "message 8"]
    assert data.summary == "replaced" and data.metadata == {"topic": "x"}
    store.append("s", msg(9))
    assert [m["content"] for m in store.load("s").messages] == ["message 7", "message 8", "message 9"]


def test_update_session_is_a_read_modify_write(store):
    def add_two(cur):
        cur = cur or SessionData("s")
        cur.messages += [msg(len(cur.messages)), msg(len(cur.messages) + 1)]
        cur.metadata["n"] = cur.metadata.get("n", 0) + 1
        return cur

    store.update_session("s", add_two)
    store.update_session("s", add_two)
    data = store.load("s")
    assert [m["content"] for m in data.messages] == [f"message {i}" for i in range(4)]
    assert data.metadata == {"n": 2}
    assert store.update_session("s", lambda cur: None) is None
    assert store.load("s") is None


def test_delete_and_list(store):
    for sid in ("b", "a", "c"):
        store.append(sid, msg(0))
    assert store.sessions() == ["a", "b", "c"]
    assert store.delete("b") is True
    assert store.delete("b") is False
    assert store.sessions() == ["a", "c"]
    assert store.load("b") is None


def test_non_json_value_is_refused(store):
    with pytest.raises(StoreError, match="JSON"):
        store.append("s", {"role": "user", "content": object()})
    with pytest.raises(StoreError, match="JSON"):
        store.kv_put("k", {1, 2})


# ------------------------------------------------------------------------------------ expiry
def test_session_expires_after_timeout(ttl_store):
    s = ttl_store
    s.append("old", msg(0))
    data = s.load("old")
    assert data is not None and data.expires_at is not None and data.expires_at > time.time()
    time.sleep(1.0)
    assert s.load("old") is None
    assert "old" not in s.sessions()
    # Appending to an expired session starts a fresh one.
    s.append("old", msg(1))
    assert [m["content"] for m in s.load("old").messages] == ["message 1"]


def test_use_refreshes_the_timeout(ttl_store):
    s = ttl_store
    s.append("live", msg(0))
    for _ in range(3):
        time.sleep(0.3)
        assert s.load("live") is not None  # each load moves the expiry forward (0.9 s > ttl in all)
    time.sleep(1.0)
    assert s.load("live") is None


def test_explicit_expire(store):
    store.append("s", msg(0))
    store.append("t", msg(0))
    assert store.expire("s", 0.3) is True
    assert store.expire("nope", 5) is False
    assert store.load("nope") is None
    assert store.expire("t", 0) is True
    assert store.load("t") is None
    time.sleep(0.5)
    assert store.load("s") is None
    store.append("u", msg(0), ttl=0.3)
    assert store.expire("u", None) is True  # never expires now
    time.sleep(0.5)
    assert store.load("u") is not None


def test_per_call_ttl_and_purge(store):
    store.append("short", msg(0), ttl=0.3)
    store.append("long", msg(0))
    time.sleep(0.5)
    store.purge_expired()
    assert store.sessions() == ["long"]
    assert store.load("short") is None


# ------------------------------------------------------------------------------------ key-value facet
def test_kv_get_put_delete_keys(store):
    assert store.kv_get("a") is None
    assert store.kv_get("a", default=5) == 5
    store.kv_put("wf:1:state", {"step": "generate", "iteration": 2})
    store.kv_put("wf:1:ckpt", [1, 2, 3])
    store.kv_put("wf:2:state", "text")
    store.kv_put("wf_x", 1.5)
    store.kv_put("other", None)
    assert store.kv_get("wf:1:state") == {"step": "generate", "iteration": 2}
    assert store.kv_get("wf:2:state") == "text"
    assert store.kv_get("other", default="dflt") is None  # a stored null is a value
    assert store.kv_keys("wf:1:") == ["wf:1:ckpt", "wf:1:state"]
    assert store.kv_keys("wf:") == ["wf:1:ckpt", "wf:1:state", "wf:2:state"]
    assert store.kv_keys("WF") == []  # prefixes are case-sensitive
    assert store.kv_keys("wf_") == ["wf_x"]  # '_' is not a wildcard
    assert set(store.kv_keys()) == {"wf:1:ckpt", "wf:1:state", "wf:2:state", "wf_x", "other"}
    assert store.kv_delete("wf:1:ckpt") is True
    assert store.kv_delete("wf:1:ckpt") is False
    assert store.kv_keys("wf:1") == ["wf:1:state"]


def test_kv_update_and_merge(store):
    assert store.kv_update("n", lambda v: v + 1, default=0) == 1
    assert store.kv_update("n", lambda v: v + 1, default=0) == 2
    assert store.kv_merge("state", {"a": 1}) == {"a": 1}
    assert store.kv_merge("state", {"b": 2}) == {"a": 1, "b": 2}
    assert store.kv_get("state") == {"a": 1, "b": 2}
    store.kv_put("s", "x")
    with pytest.raises(StoreError, match="not a dict"):
        store.kv_merge("s", {"a": 1})


def test_kv_ttl(store):
    store.kv_put("k", 1, ttl=0.8)
    store.kv_put("keep", 1)
    store.kv_update("u", lambda v: (v or 0) + 1, ttl=0.8)
    assert store.kv_get("k") == 1
    store.kv_update("k", lambda v: v + 1)  # no ttl given: the expiry is kept
    time.sleep(1.0)
    assert store.kv_get("k") is None
    assert store.kv_get("u") is None
    assert store.kv_keys() == ["keep"]
    assert store.kv_update("k", lambda v: (v or 0) + 10) == 10  # expired counts as absent


def test_sessions_and_kv_do_not_collide(store):
    store.append("kv:x", msg(0))
    store.kv_put("x", 1)
    store.kv_put("kv:x", 2)
    assert store.sessions() == ["kv:x"]
    assert store.kv_get("x") == 1 and store.kv_get("kv:x") == 2
    assert len(store.load("kv:x").messages) == 1


def test_message_numbers_only_grow_across_trims_and_rewrites(store):
    store.append("s", [msg(i) for i in range(5)])
    assert store.load("s").first_seq == 0
    store.trim("s", 2)
    data = store.load("s", last=1)
    assert (data.first_seq, data.message_count, [m["content"] for m in data.messages]) == (
        3,
        2,
        ["message 4"],
    )
    rewritten = store.replace("s", [msg(7), msg(8), msg(9)])  # numbered after the last one: 5, 6, 7
    assert (rewritten.first_seq, rewritten.message_count) == (5, 3)
    assert (store.load("s").first_seq, store.append("s", msg(10))) == (5, 4)
    assert store.load("s").first_seq == 5


def test_a_session_id_that_extends_another_reads_only_its_own_messages(store):
    # on diskcache the message keys of "a:00000000001" sort between those of "a"'s messages 19 and 20
    store.append("a", [msg(i) for i in range(30)])
    store.append("a:00000000001", [msg(100 + i) for i in range(3)])
    assert [m["content"] for m in store.load("a").messages] == [f"message {i}" for i in range(30)]
    assert [m["content"] for m in store.load("a", last=12).messages] == [
        f"message {i}" for i in range(18, 30)
    ]
    assert [m["content"] for m in store.load("a:00000000001").messages] == [
        "message 100",
        "message 101",
        "message 102",
    ]
    assert [m["content"] for m in store.trim("a", 2)] == [f"message {i}" for i in range(28)]
    assert len(store.load("a:00000000001").messages) == 3


# ------------------------------------------------------------------------------------ backend specifics
def test_factory_names_and_defaults(tmp_path):
    assert canonical_storage(None) == "diskcache"
    assert (
        canonical_storage("database") == canonical_storage("postgres") == canonical_storage("sqlite") == "sql"
    )
    assert canonical_storage("disk") == "diskcache"
    with pytest.raises(StoreError, match="did you mean 'redis'"):
        canonical_storage("rediss")
    s = open_store()  # embedded default, under SIBYL_HOME
    assert s.backend == "diskcache" and str(s.directory).startswith(str(tmp_path))
    s.close()
    s = open_store("database", database_url=None, table="conversations")  # unset ${DATABASE_URL}
    assert s.backend == "sql" and s.dialect == "sqlite" and str(tmp_path) in s.url
    s.close()
    with pytest.raises(StoreError, match="needs database_url"):
        open_store("postgres")
    assert normalize_database_url("postgresql://u@h:5432/db") == "postgresql+psycopg://u@h:5432/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert shared_store("memory") is shared_store("memory")
    assert shared_store("memory", ttl=5) is not shared_store("memory")


def test_mask_url_hides_passwords():
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert mask_url("postgresql://bob:pw@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_unreachable_redis_names_backend_url_and_fix():
    with pytest.raises(StoreError) as err:
        open_store("redis", redis_url="redis://:hunter2@127.0.0.1:1/0", socket_timeout=0.5)
    text = str(err.value)
    assert "redis" in text and "127.0.0.1:1" in text and "hunter2" not in text
    assert "diskcache" in text  # how to fix: the embedded default


def test_unreachable_postgres_names_backend_url_and_fix():
    with pytest.raises(StoreError) as err:
        open_store("postgres", database_url="postgresql://postgres:pw@127.0.0.1:1/test?connect_timeout=1")
    text = str(err.value)
    assert "sql store" in text and "127.0.0.1:1" in text and ":pw@" not in text and "DATABASE_URL" in text


def test_bad_table_name_is_refused():
    with pytest.raises(StoreError, match="plain SQL table name"):
        open_store("sqlite", table="x; DROP TABLE y")


def test_diskcache_stores_json_and_refuses_pickle(tmp_path):
    import pickle
    import sqlite3

    s = open_store("diskcache", directory=str(tmp_path / "dc"))
    s.kv_put("k", {"a": 1})
    s.append("s", msg(0))
    s.close()
    db = sqlite3.connect(tmp_path / "dc" / "cache.db")
    rows = dict(db.execute("SELECT key, value FROM Cache WHERE key IN ('k:k', 'h:s')").fetchall())
    assert json.loads(rows["k:k"]) == {"a": 1}  # plain JSON text on disk
    # A tampered row holding a pickle must never be unpickled (CVE-2025-69872).
    db.execute("UPDATE Cache SET value = ?, mode = 4 WHERE key = 'k:k'", (pickle.dumps({"evil": 1}),))
    db.commit()
    db.close()
    s = open_store("diskcache", directory=str(tmp_path / "dc"))
    with pytest.raises(StoreError, match="unpickle"):
        s.kv_get("k")
    s.close()


def test_redis_layout_and_ttl_on_keys(request, unique):
    s = open_backend("redis", unique, request, ttl=30)
    try:
        s.append("s", msg(0))
        r = s._r
        assert r.type(f"{unique}:s:s:messages") == b"list"
        assert r.type(f"{unique}:s:s:meta") == b"hash"
        assert 0 < r.pttl(f"{unique}:s:s:messages") <= 30_000
        assert 0 < r.pttl(f"{unique}:s:s:meta") <= 30_000
        s.kv_put("k", {"a": 1})
        assert json.loads(r.get(f"{unique}:kv:k")) == {"a": 1}
    finally:
        cleanup(s)
