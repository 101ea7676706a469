"""The seed's ``conversations`` table tells the truth after every turn, read by a separate client
with plain SQL, on SQLite and PostgreSQL; appends and trims stay row-sized (no rewrite)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from test_stores import cleanup, open_backend

from sibyl_nb.errors import StoreError
from sibyl_nb.stores import open_store

SEED_COLUMNS = {"session_id", "user_id", "messages", "metadata", "created_at", "updated_at", "expires_at"}


def msg(i: int) -> dict:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}


@pytest.fixture(params=["sqlite", "postgres"])
def sql_store(request, unique, tmp_path):
    if request.param == "postgres":
        s = open_backend("postgres", unique, request)
        outside = sa.create_engine(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path / 'chat.db'}"
        s = open_store("database", database_url=url, table=f"conv_{unique}", kv_table=f"kv_{unique}")
        outside = sa.create_engine(url)
    yield s, outside
    outside.dispose()
    cleanup(s)


def rows(engine, table: str) -> dict[str, list]:
    with engine.connect() as conn:
        out = {}
        for sid, messages in conn.execute(sa.text(f"SELECT session_id, messages FROM {table}")):
            out[sid] = json.loads(messages) if isinstance(messages, str) else messages
        return out


def test_select_messages_from_conversations_is_current_after_every_turn(sql_store):
    s, outside = sql_store
    table = s.table
    for turn in range(70):  # past the old 64-message compaction point
        s.append("alice", [msg(2 * turn), msg(2 * turn + 1)], user_id="u1")
        seen = rows(outside, table)["alice"]
        assert [m["content"] for m in seen] == [f"message {i}" for i in range(2 * turn + 2)]
    s.append("bob", msg(0))
    assert {k: len(v) for k, v in rows(outside, table).items()} == {"alice": 140, "bob": 1}
    with outside.connect() as conn:
        cols = {c["name"] for c in sa.inspect(conn).get_columns(table)}
        user = conn.execute(sa.text(f"SELECT user_id FROM {table} WHERE session_id = 'alice'")).scalar()
    assert cols >= SEED_COLUMNS and user == "u1"


def test_trim_and_summary_show_in_the_table(sql_store):
    s, outside = sql_store
    s.append("s", [msg(i) for i in range(10)])
    dropped = s.trim("s", 3, fold=lambda old, d: f"{old}folded {len(d)}")
    assert [m["content"] for m in dropped] == [f"message {i}" for i in range(7)]
    assert [m["content"] for m in rows(outside, s.table)["s"]] == ["message 7", "message 8", "message 9"]
    with outside.connect() as conn:
        summary = conn.execute(sa.text(f"SELECT summary FROM {s.table}")).scalar()
    assert summary == "folded 7"
    data = s.load("s")
    assert data.summary == "folded 7" and data.summary_covers == 7 and data.total == 3
    s.delete("s")
    assert rows(outside, s.table) == {}


def test_load_last_reads_only_the_newest_messages(sql_store):
    s, _ = sql_store
    s.append("s", [msg(i) for i in range(500)])
    data = s.load("s", last=4)
    assert [m["content"] for m in data.messages] == [f"message {i}" for i in range(496, 500)]
    assert data.total == 500 and data.message_count == 500
    assert len(s.load("s").messages) == 500
    assert s.load("s", last=0).messages == [] and s.load("s", last=10_000).total == 500


@pytest.mark.parametrize(
    "bad", ["pg_catalog.pg_class", "public.conversations", 'x"; DROP TABLE y; --', "a" * 60]
)
def test_table_names_must_be_plain(bad, tmp_path):
    with pytest.raises(StoreError, match="plain SQL table name"):
        open_store("database", database_url=f"sqlite:///{tmp_path / 'x.db'}", table=bad)
    with pytest.raises(StoreError, match="plain SQL table name"):
        open_store("database", database_url=f"sqlite:///{tmp_path / 'x.db'}", kv_table=bad)


def test_an_old_conversations_table_is_reported_not_overwritten(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    eng = sa.create_engine(url)
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE conversations (session_id TEXT PRIMARY KEY, messages TEXT)"))
        conn.execute(sa.text("INSERT INTO conversations VALUES ('keep', '[]')"))
    s = open_store("database", database_url=url)
    with pytest.raises(StoreError, match="does not have the seed.s columns to migrate"):
        s.append("x", msg(0))
    s.close()
    with eng.connect() as conn:
        assert conn.execute(sa.text("SELECT session_id FROM conversations")).scalars().all() == ["keep"]
    eng.dispose()


def _old_layout(engine, table: str, dialect: str) -> None:
    """The previous release's layout: messages as one JSON array, pending appends in T_log."""
    js = "JSONB" if dialect == "postgresql" else "TEXT"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (session_id TEXT PRIMARY KEY, user_id TEXT, messages {js}, "
                f"metadata {js}, created_at TIMESTAMP, updated_at TIMESTAMP, expires_at TIMESTAMP)"
            )
        )
        conn.execute(
            sa.text(f"CREATE TABLE {table}_log (id INTEGER PRIMARY KEY, session_id TEXT, message {js})")
        )
        meta = json.dumps({"note": "kept", "sibyl": {"summary": "earlier talk", "summary_covers": 3}})
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES ('a', 'u', :m, :meta, '2026-01-01 10:00:00', NULL, NULL)"),
            {"m": json.dumps([msg(0), msg(1)]), "meta": meta},
        )
        conn.execute(sa.text(f"INSERT INTO {table}_log VALUES (1, 'a', :m)"), {"m": json.dumps(msg(2))})


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_older_layout_is_migrated_without_losing_a_message(backend, request, unique, tmp_path):
    url = (
        request.getfixturevalue("postgres_url") if backend == "postgres" else f"sqlite:///{tmp_path / 'o.db'}"
    )
    table = f"conv_{unique}"
    engine = sa.create_engine(url)
    _old_layout(engine, table, engine.dialect.name)
    s = open_store("database", database_url=url, table=table, kv_table=f"kv_{unique}")
    try:
        data = s.load("a")
        assert [m["content"] for m in data.messages] == ["message 0", "message 1", "message 2"]
        assert data.summary == "earlier talk" and data.summary_covers == 3 and data.user_id == "u"
        assert data.metadata == {"note": "kept"}
        s.append("a", msg(3))
        assert [m["content"] for m in rows(engine, table)["a"]] == [f"message {i}" for i in range(4)]
        assert not sa.inspect(engine).has_table(f"{table}_log")
    finally:
        engine.dispose()
        cleanup(s)
