"""The seed's memory-session config (``timeout:`` set, so every load refreshes the expiry) under
concurrent turns on one session: 8 threads x 3 runs, every run finishes and every turn is stored,
on every SQL backend and Redis. Before the fix PostgreSQL finished 7 of 24 ("deadlock detected",
reported as "unavailable; start PostgreSQL there")."""

from __future__ import annotations

import threading

import pytest

import sibyl_nb as sb
from sibyl_nb.stores import close_shared_stores, open_store

THREADS = 8
RUNS = 3

DOC = """
pipelines:
  conversational_qa:
    shop: workflow_orchestration
    steps:
      - use: workflow_orchestration.session_management
        config:
          subtechnique: memory
          timeout: 3600
          max_messages: 100
          storage: {storage}
{extra}
          session_id: "${{user_id}}"
"""


def _config(backend, request, unique):
    if backend == "postgres":
        url = request.getfixturevalue("postgres_url")
        return (
            "database",
            f'          database_url: "{url}"\n          table: conv_{unique}',
            {
                "database_url": url,
                "table": f"conv_{unique}",
            },
        )
    if backend == "sqlite":
        return "database", f"          table: conv_{unique}", {"table": f"conv_{unique}"}
    url = request.getfixturevalue("redis_url")
    return (
        "redis",
        f'          redis_url: "{url}"\n          key_prefix: "{unique}:"',
        {
            "redis_url": url,
            "key_prefix": f"{unique}:",
        },
    )


@pytest.mark.parametrize("backend", ["postgres", "sqlite", "redis"])
def test_eight_threads_three_runs_all_finish(backend, request, unique):
    storage, extra, cfg = _config(backend, request, unique)
    pipe = sb.Pipeline.from_yaml(DOC.format(storage=storage, extra=extra))
    errors: list[str] = []
    done: list[int] = []

    def worker(w: int) -> None:
        for r in range(RUNS):
            try:
                pipe.run({"user_id": unique, "message": f"question {w}-{r}"})
                done.append(1)
            except Exception as exc:  # collected: the assertion below shows them
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(done) == THREADS * RUNS
    close_shared_stores()
    store = open_store(storage, **cfg)
    try:
        data = store.load(unique)
        users = sorted(m["content"] for m in data.messages if m["role"] == "user")
        assert users == sorted(f"question {w}-{r}" for w in range(THREADS) for r in range(RUNS))
    finally:
        if backend == "postgres":
            store.drop_tables()
        elif backend == "redis":
            store.delete(unique)
        store.close()


def _trigger(engine, table: str, fail_first: int | None, state: str) -> None:
    """A trigger that makes PostgreSQL itself raise ``state`` on the first ``fail_first`` message
    inserts (None: on every one), as a deadlock victim or a serialisation failure would see it."""
    import sqlalchemy as sa

    cond = "TRUE" if fail_first is None else f"nextval('{table}_fails') <= {fail_first}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SEQUENCE {table}_fails"))
        conn.execute(
            sa.text(
                f"CREATE FUNCTION {table}_boom() RETURNS trigger AS $$ BEGIN IF {cond} THEN "
                f"RAISE EXCEPTION 'injected' USING ERRCODE = '{state}'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        conn.execute(
            sa.text(
                f"CREATE TRIGGER {table}_boom BEFORE INSERT ON {table}_messages "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_boom()"
            )
        )


def _untrigger(engine, table: str) -> None:
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}_messages CASCADE"))
        conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {table}_boom() CASCADE"))
        conn.execute(sa.text(f"DROP SEQUENCE IF EXISTS {table}_fails"))


@pytest.mark.parametrize("state,words", [("40P01", "deadlock detected"), ("40001", "serialisation failure")])
def test_deadlocks_are_retried_then_reported_as_what_they_are(state, words, postgres_url, unique):
    import sqlalchemy as sa

    from sibyl_nb.errors import StoreError

    table = f"conv_{unique}"
    store = open_store("postgres", database_url=postgres_url, table=table)
    engine = sa.create_engine(postgres_url)
    try:
        store.append("s", {"role": "user", "content": "first"})  # creates the tables
        _trigger(engine, table, 2, state)
        assert store.append("s", {"role": "user", "content": "after two failures"}) == 2  # retried
        _untrigger(engine, table)
        store.close()
        store = open_store("postgres", database_url=postgres_url, table=table)
        store.append("s", {"role": "user", "content": "first"})
        _trigger(engine, table, None, state)
        with pytest.raises(StoreError) as err:
            store.append("s", {"role": "user", "content": "never"})
        text = str(err.value)
        assert words in text and "attempts" in text and "start PostgreSQL" not in text
        assert [m["content"] for m in store.load("s").messages] == ["first"]
    finally:
        _untrigger(engine, table)
        store.drop_tables()
        store.close()
        engine.dispose()
