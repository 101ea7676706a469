"""Concurrent writers never lose or duplicate a message, on every backend: 8 writers x 500 appends ->
exactly 4000 messages, each writer's in its own order. Threads on every backend, processes on the
ones shared between processes, asyncio tasks on memory; plus atomic KV read-modify-write."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading

import pytest
from test_stores import BACKENDS, cleanup, open_backend, store_config

from sibyl_nb.stores import open_store

WRITERS = 8
APPENDS = 500


def _check(store, sid="shared"):
    data = store.load(sid)
    contents = [m["content"] for m in data.messages]
    assert len(contents) == WRITERS * APPENDS
    assert len(set(contents)) == WRITERS * APPENDS  # nothing duplicated
    for w in range(WRITERS):
        mine = [c for c in contents if c.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i}" for i in range(APPENDS)]  # nothing lost, in the writer's order


def _write(store, w, sid="shared"):
    for i in range(APPENDS):
        store.append(sid, {"role": "user", "content": f"w{w}-{i}"})


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_append_concurrently(backend, unique, request):
    store = open_backend(backend, unique, request)
    try:
        errors = []

        def run(w):
            try:
                _write(store, w)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        _check(store)
    finally:
        cleanup(store)


def _process_writer(storage, config, home, w, start):
    os.environ["SIBYL_HOME"] = home
    store = open_store(storage, **config)
    start.wait()
    _write(store, w)
    store.close()


@pytest.mark.parametrize("backend", ["diskcache", "sqlite", "redis", "postgres"])
def test_processes_append_concurrently(backend, unique, request):
    storage, config = store_config(backend, unique, request)
    store = open_store(storage, **config)  # creates tables / folders first
    try:
        mp = multiprocessing.get_context("spawn")
        start = mp.Event()
        procs = [
            mp.Process(target=_process_writer, args=(storage, config, os.environ["SIBYL_HOME"], w, start))
            for w in range(WRITERS)
        ]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(120)
        assert all(p.exitcode == 0 for p in procs)
        _check(store)
    finally:
        cleanup(store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_asyncio_tasks_append_concurrently(backend, unique, request):
    store = open_backend(backend, unique, request)

    async def writer(w):
        for i in range(APPENDS):
            if store.backend in ("redis", "sql"):
                await asyncio.to_thread(store.append, "shared", {"role": "user", "content": f"w{w}-{i}"})
            else:
                store.append("shared", {"role": "user", "content": f"w{w}-{i}"})
                await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    try:
        asyncio.run(main())
        _check(store)
    finally:
        cleanup(store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kv_update_is_atomic(backend, unique, request):
    store = open_backend(backend, unique, request)
    try:
        n = 100

        def run():
            for _ in range(n):
                store.kv_update("counter", lambda v: v + 1, default=0)
                store.kv_merge("map", {threading.current_thread().name: 1})

        threads = [threading.Thread(target=run, name=f"t{i}") for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.kv_get("counter") == WRITERS * n
        assert sorted(store.kv_get("map")) == sorted(f"t{i}" for i in range(WRITERS))
    finally:
        cleanup(store)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trims_and_appends_interleave_safely(backend, unique, request):
    """A trim racing with appends never loses a message that was not trimmed."""
    store = open_backend(backend, unique, request)
    try:
        folded = []

        def fold(old, dropped):
            return old + "".join(f"[{m['content']}]" for m in dropped)

        def appender(w):
            for i in range(100):
                store.append("s", {"role": "user", "content": f"w{w}-{i}"})

        def trimmer():
            for _ in range(20):
                folded.extend(store.trim("s", 10, fold=fold))

        threads = [threading.Thread(target=appender, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=trimmer))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = store.load("s")
        seen = [m["content"] for m in folded] + [m["content"] for m in data.messages]
        assert sorted(seen) == sorted(f"w{w}-{i}" for w in range(4) for i in range(100))
        assert data.summary_covers == len(folded)
        assert data.summary == "".join(f"[{m['content']}]" for m in folded)
    finally:
        cleanup(store)
