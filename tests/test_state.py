"""Workflow state: the seed's save_state / load_state / update_state on every backend, the
``workflow_orchestration.state_management`` step, ttl, namespaces, and 8 concurrent updaters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.errors import SpecError, StoreError
from sibyl_nb.state.store import StateStore, deep_merge, open_state_store
from sibyl_nb.stores import open_store


@sb.technique("st.count", blocking=False)
def _count(ctx):
    ctx.state["visits"] = ctx.state.get("visits", 0) + 1
    ctx.state["last_query"] = ctx.input.get("query")
    return {"visits": ctx.state["visits"]}


@sb.technique("st.fail", blocking=False)
def _fail(ctx):
    ctx.state["visits"] = 999
    raise RuntimeError("no")


def state_pipeline(config: str = "{}", then: str = "st.count") -> sb.Pipeline:
    return sb.Pipeline.from_yaml(f"""
steps:
  - use: workflow_orchestration.state_management
    config: {config}
  - use: {then}
""")


# ---------------------------------------------------------------------- the seed's API
def test_seed_state_operations_default_to_diskcache():
    pipe = state_pipeline()
    assert pipe.state_store().backend == "diskcache"

    async def go():
        await pipe.save_state(
            workflow_id="workflow_123",
            state={"current_step": "generate", "iteration": 2, "results": {"a": 1}},
        )
        state = await pipe.load_state("workflow_123")
        assert state == {"current_step": "generate", "iteration": 2, "results": {"a": 1}}
        new = await pipe.update_state(workflow_id="workflow_123", updates={"current_step": "validate"})
        assert new == {"current_step": "validate", "iteration": 2, "results": {"a": 1}}
        assert await pipe.load_state("workflow_123") == new
        deep = await pipe.update_state(workflow_id="workflow_123", updates={"results": {"b": 2}}, deep=True)
        assert deep["results"] == {"a": 1, "b": 2}
        bumped = await pipe.update_state("workflow_123", fn=lambda s: s.update(iteration=s["iteration"] + 1))
        assert bumped["iteration"] == 3
        assert await pipe.load_state("missing") is None
        assert await pipe.load_state("missing", {}) == {}
        assert await pipe.delete_state("workflow_123") is True
        assert await pipe.load_state("workflow_123") is None

    asyncio.run(go())


def test_state_management_step_loads_state_and_saves_it_when_the_run_succeeds():
    pipe = state_pipeline("{backend: memory, namespace: 'workflow:'}")
    assert pipe.run({"query": "one"}, workflow_id="wf").output == {"visits": 1}
    assert pipe.run({"query": "two"}, workflow_id="wf").output == {"visits": 2}
    assert pipe.run({"query": "x"}, workflow_id="other").output == {"visits": 1}
    state = asyncio.run(pipe.load_state("wf"))
    assert state == {"visits": 2, "last_query": "two"}
    store = pipe.state_store()
    assert store.prefix == "workflow:" and "workflow:wf" in store.store.kv_keys("workflow:")
    # a failed run saves nothing
    failing = state_pipeline("{backend: memory, namespace: 'workflow:'}", then="st.fail")
    with pytest.raises(sb.NodeExecutionError):
        failing.run({}, workflow_id="wf")
    assert asyncio.run(pipe.load_state("wf"))["visits"] == 2


def test_the_step_output_says_what_was_loaded():
    pipe = state_pipeline("{backend: memory}")
    asyncio.run(pipe.save_state("wf-out", {"visits": 5}))
    result = pipe.run({}, workflow_id="wf-out")
    step = result.outputs["state_management"]
    assert step["workflow_id"] == "wf-out" and step["loaded"] == ["visits"] and step["backend"] == "memory"
    assert result.output == {"visits": 6}


def test_explicit_workflow_id_and_save_false():
    pipe = state_pipeline("{backend: memory, workflow_id: 'fixed-${user}', save: false}")
    asyncio.run(pipe.save_state("fixed-ann", {"visits": 10}))
    assert pipe.run({"user": "ann"}).output == {"visits": 11}
    assert asyncio.run(pipe.load_state("fixed-ann")) == {"visits": 10}  # save: false


def test_ttl_expires_state():
    pipe = state_pipeline("{backend: diskcache, ttl: 0.3}")
    asyncio.run(pipe.save_state("short", {"a": 1}))
    assert asyncio.run(pipe.load_state("short")) == {"a": 1}
    time.sleep(0.45)
    assert asyncio.run(pipe.load_state("short")) is None


def test_bad_config_is_a_located_load_error():
    with pytest.raises(SpecError) as exc:
        state_pipeline("{backend: mongo}")
    assert "backend" in str(exc.value) and exc.value.line == 4
    with pytest.raises(SpecError, match="did you mean 'namespace'"):
        state_pipeline("{namespaces: 'x:'}")


def test_configure_overrides_the_backend_and_values_must_be_json(tmp_path):
    pipe = state_pipeline()
    pipe.configure(state={"backend": "database", "database_url": f"sqlite:///{tmp_path / 's.db'}"})
    assert pipe.state_store().backend == "sql"
    asyncio.run(pipe.save_state("w", {"ok": True}))
    assert asyncio.run(pipe.load_state("w")) == {"ok": True}
    with pytest.raises(StoreError, match="JSON"):
        asyncio.run(pipe.save_state("w", {"bad": object()}))
    with pytest.raises(StoreError, match="must be a dict"):
        asyncio.run(pipe.save_state("w", ["not", "a", "dict"]))


def test_deep_merge():
    assert deep_merge({"a": {"x": 1}, "b": 1}, {"a": {"y": 2}, "b": {"z": 3}}) == {
        "a": {"x": 1, "y": 2},
        "b": {"z": 3},
    }


def test_seed_redis_url_from_an_unset_env_var_means_the_local_default(redis_url, monkeypatch, unique):
    # the seed writes redis_url: "${REDIS_URL}"; unset, it renders to None -> redis://127.0.0.1:6379/0
    monkeypatch.delenv("REDIS_URL", raising=False)
    pipe = state_pipeline(
        f'{{backend: redis, redis_url: "${{REDIS_URL}}", namespace: "{unique}:", ttl: 3600}}'
    )
    store = pipe.state_store()
    assert store.backend == "redis" and "127.0.0.1:6379" in store.store.url
    assert pipe.run({"query": "q"}, workflow_id="w1").output == {"visits": 1}
    assert pipe.run({"query": "q"}, workflow_id="w1").output == {"visits": 2}
    raw = store.store._r.get(f"{unique}:w1")  # the namespace is the Redis key prefix, as the seed reads
    assert raw is not None and 0 < store.store._r.ttl(f"{unique}:w1") <= 3600
    store.delete_sync("w1")


# ---------------------------------------------------------------------- concurrency
WRITERS = 8
UPDATES = 25


def hammer(stores: list[StateStore], workflow_id: str) -> dict:
    """8 threads, each with its own store object (own connections): distinct keys + a shared counter."""
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        store = stores[w]
        try:
            for i in range(UPDATES):
                store.merge_sync(workflow_id, {f"w{w}_{i}": i})
                store.update_sync(workflow_id, lambda s: s.update(counter=s.get("counter", 0) + 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return stores[0].load_sync(workflow_id)


def check(state: dict) -> None:
    assert state["counter"] == WRITERS * UPDATES
    assert len([k for k in state if k.startswith("w")]) == WRITERS * UPDATES


def test_concurrent_updates_lose_nothing_on_diskcache(tmp_path):
    stores = [
        open_state_store({"backend": "diskcache", "path": str(tmp_path / "st")}) for _ in range(WRITERS)
    ]
    check(hammer(stores, "shared"))


def test_concurrent_updates_lose_nothing_on_sqlite(tmp_path, unique):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    stores = [
        StateStore(open_store("database", database_url=url, kv_table=f"{unique}_kv")) for _ in range(WRITERS)
    ]
    try:
        check(hammer(stores, "shared"))
    finally:
        for s in stores:
            s.store.close()


@pytest.mark.postgres
def test_concurrent_updates_lose_nothing_on_postgresql(postgres_url, unique):
    stores = [
        StateStore(
            open_store("database", database_url=postgres_url, table=f"{unique}_c", kv_table=f"{unique}_kv")
        )
        for _ in range(WRITERS)
    ]
    try:
        check(hammer(stores, "shared"))
    finally:
        stores[0].store.drop_tables()
        for s in stores:
            s.store.close()


@pytest.mark.redis
def test_concurrent_updates_lose_nothing_on_redis(redis_url, unique):
    stores = [
        StateStore(open_store("redis", redis_url=redis_url, kv_prefix=f"{unique}:")) for _ in range(WRITERS)
    ]
    try:
        check(hammer(stores, "shared"))
    finally:
        stores[0].delete_sync("shared")
        for s in stores:
            s.store.close()


@pytest.mark.redis
def test_concurrent_update_state_from_async_tasks_on_redis(redis_url, unique):
    # the pipeline API: async update_state offloads network calls to threads, so 8 tasks really overlap
    pipe = state_pipeline(f'{{backend: redis, redis_url: "{redis_url}", namespace: "{unique}:"}}')

    async def writer(w: int) -> None:
        for i in range(UPDATES):
            await pipe.update_state(workflow_id="shared", updates={f"w{w}_{i}": i})
            await pipe.update_state("shared", fn=lambda s: s.update(counter=s.get("counter", 0) + 1))

    async def go() -> dict:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        return await pipe.load_state("shared")

    try:
        check(asyncio.run(go()))
    finally:
        asyncio.run(pipe.delete_state("shared"))


@pytest.mark.postgres
def test_concurrent_update_state_from_async_tasks_on_postgresql(postgres_url, unique):
    pipe = state_pipeline(f'{{backend: database, database_url: "{postgres_url}"}}')
    wf = f"{unique}-shared"

    async def writer(w: int) -> None:
        for i in range(UPDATES):
            await pipe.update_state(workflow_id=wf, updates={f"w{w}_{i}": i})
            await pipe.update_state(wf, fn=lambda s: s.update(counter=s.get("counter", 0) + 1))

    async def go() -> dict:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))
        return await pipe.load_state(wf)

    try:
        check(asyncio.run(go()))
    finally:
        asyncio.run(pipe.delete_state(wf))


@pytest.mark.redis
def test_the_seeds_state_storage_block_runs(redis_url, monkeypatch):
    from seed_examples import block

    monkeypatch.delenv("REDIS_URL", raising=False)  # "${REDIS_URL}" unset -> the local default server
    pipe = sb.Pipeline.from_yaml(block("State Storage"))
    asyncio.run(pipe.save_state("seed-state-test", {"current_step": "generate", "iteration": 2}))
    try:
        result = pipe.run({}, workflow_id="seed-state-test")
        assert result.output["backend"] == "redis"
        assert result.output["state"] == {"current_step": "generate", "iteration": 2}
        assert pipe.state_store().store._r.ttl("workflow:seed-state-test") > 3500  # ttl: 3600
    finally:
        asyncio.run(pipe.delete_state("seed-state-test"))
