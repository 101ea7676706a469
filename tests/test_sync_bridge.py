"""``Pipeline.run`` from sync code: same results and asyncio semantics whether the run suspends or
not, inside a running loop (a notebook cell) or not; interrupts propagate."""

from __future__ import annotations

import asyncio
import contextvars
import os
import signal
import threading
import time

import pytest

import sibyl_nb as sb
from sibyl_nb.engine.sync import run_sync

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="caller")


@pytest.fixture(scope="module", autouse=True)
def _techniques():
    @sb.technique("sync_bridge.add", blocking=False)
    def add(ctx):
        return {"value": ctx.input.get("x", 0) + 1}

    @sb.technique("sync_bridge.asyncio_features")
    async def features(ctx):
        VAR.set("inside")
        async with asyncio.timeout(5):  # needs a current task
            async with asyncio.TaskGroup() as tg:  # so does this
                t = tg.create_task(asyncio.sleep(0, result=7))
        return {"value": t.result(), "task": asyncio.current_task() is not None, "var": VAR.get()}

    @sb.technique("sync_bridge.sleep")
    async def sleep(ctx):
        await asyncio.sleep(ctx.config.get("seconds", 0.01))
        return {"slept": True}

    @sb.technique("sync_bridge.later", blocking=False)
    def later(ctx):
        asyncio.get_running_loop().call_soon(CALLED.append, ctx.node_id)
        return {}

    @sb.technique("sync_bridge.interrupt", blocking=False)
    def interrupt(ctx):
        raise KeyboardInterrupt

    yield
    for name in ("add", "asyncio_features", "sleep", "later", "interrupt"):
        sb.techniques.registry.unregister_technique(f"sync_bridge.{name}")


CALLED: list[str] = []


def chain(*uses: str, **config) -> sb.Pipeline:
    return sb.Pipeline.from_dict({"steps": [{"use": f"sync_bridge.{u}", "config": config} for u in uses]})


def test_a_run_that_never_suspends_gives_the_same_result_as_execute():
    pipe = chain("add")
    assert pipe.run({"x": 41}).output == {"value": 42}
    assert asyncio.run(pipe.execute({"x": 41})).output == {"value": 42}


def test_tasks_timeouts_and_context_variables_behave_as_on_a_loop():
    pipe = chain("asyncio_features")
    for _ in range(2):  # the first step runs eagerly; a later one reuses the thread's loop
        out = pipe.run().output
        assert out == {"value": 7, "task": True, "var": "inside"}
        assert VAR.get() == "caller"  # the run's context is a copy, as under run_until_complete


def test_a_run_that_suspends_completes_with_and_without_a_running_loop():
    pipe = chain("add", "sleep", seconds=0.02)
    assert pipe.run({"x": 1}).outputs["sleep"] == {"slept": True}

    async def cell():  # a notebook cell: a loop is running in this thread
        return pipe.run({"x": 1}), pipe.run({"x": 2}, loop="thread")

    first, second = asyncio.run(cell())
    assert [r.node_id for r in first.records] == ["add", "sleep"]
    assert second.outputs["add"] == {"value": 3}


def test_a_run_that_never_suspends_inside_a_running_loop_stays_in_this_thread():
    seen = []

    @sb.technique("sync_bridge.where", blocking=False)
    def where(ctx):
        seen.append(threading.current_thread())
        return {}

    try:

        async def cell():
            return chain("where").run()

        asyncio.run(cell())
        assert seen == [threading.current_thread()]
    finally:
        sb.techniques.registry.unregister_technique("sync_bridge.where")


def test_callbacks_a_run_schedules_still_run():
    CALLED.clear()
    chain("later").run()
    assert CALLED == ["later"]


def test_errors_and_interrupts_propagate_and_the_pipeline_runs_again():
    with pytest.raises(KeyboardInterrupt):
        chain("add", "interrupt").run()
    assert chain("add").run({"x": 1}).output == {"value": 2}
    with pytest.raises(sb.SibylError, match="loop must be one of"):
        chain("add").run(loop="elsewhere")


def test_kernel_interrupt_while_waiting_cancels_the_run_and_keeps_what_finished():
    """SIGINT while a cell waits on the helper thread: KeyboardInterrupt in the cell, the run cancelled
    (not left running), and the step that had finished was reported."""
    events = []
    pipe = chain("add", "sleep", seconds=30)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))

    async def cell():
        timer.start()
        return pipe.run({"x": 1}, observers=[events.append])

    loop = asyncio.new_event_loop()  # as ipykernel's: SIGINT raises KeyboardInterrupt (asyncio.run's
    t0 = time.perf_counter()  # runner would turn it into a cancel of its main task instead)
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    assert time.perf_counter() - t0 < 15
    finished = [e.node_id for e in events if e.kind == "node_finished"]
    assert finished == ["add"]


def test_run_sync_returns_the_value_of_a_plain_coroutine():
    async def f():
        await asyncio.sleep(0)
        return "done"

    assert run_sync(f()) == "done"


def test_a_technique_may_run_another_pipeline_synchronously():
    inner = chain("add")

    @sb.technique("sync_bridge.nested", blocking=False)
    def nested(ctx):
        return {"inner": inner.run({"x": 9}).output["value"]}

    @sb.technique("sync_bridge.nested_async")
    async def nested_async(ctx):
        await asyncio.sleep(0)
        return {"inner": chain("add", "sleep", seconds=0.001).run({"x": 1}).outputs["add"]["value"]}

    try:
        assert chain("nested").run().output == {"inner": 10}
        assert chain("nested_async").run().output == {"inner": 2}
    finally:
        sb.techniques.registry.unregister_technique("sync_bridge.nested")
        sb.techniques.registry.unregister_technique("sync_bridge.nested_async")


def test_a_technique_may_run_another_pipeline_inside_a_notebook_cell():
    inner = chain("add", "sleep", seconds=0.001)

    @sb.technique("sync_bridge.nested_cell", blocking=False)
    def nested(ctx):
        return {"inner": inner.run({"x": 4}).outputs["add"]["value"]}

    async def cell():
        return chain("nested_cell").run().output

    try:
        assert asyncio.run(cell()) == {"inner": 5}
    finally:
        sb.techniques.registry.unregister_technique("sync_bridge.nested_cell")


# ---------------------------------------------------------------------- a pipeline of sync techniques
# Its first step runs without an asyncio task (engine/sync.py, ``taskless``): everything that needs a
# task must still get one, and the run must behave exactly as one started in a task.


def _register(name, fn, **options):
    sb.technique(f"sync_bridge.{name}", **options)(fn)
    return f"sync_bridge.{name}"


def test_a_sync_technique_that_returns_a_coroutine_needing_a_task_gets_one():
    async def timed(x):
        async with asyncio.timeout(5):  # raises RuntimeError outside a task
            await asyncio.sleep(0)
        return {"value": x, "task": asyncio.current_task() is not None}

    name = _register("returns_coro", lambda ctx: timed(ctx.input["x"]), blocking=False)
    try:
        pipe = sb.Pipeline.from_dict({"steps": [{"use": name}]})
        assert pipe.run({"x": 3}).output == {"value": 3, "task": True}

        async def cell():
            return pipe.run({"x": 4}).output

        assert asyncio.run(cell()) == {"value": 4, "task": True}
    finally:
        sb.techniques.registry.unregister_technique(name)


def test_a_sync_technique_sees_a_copy_of_the_callers_context_variables():
    def setter(ctx):
        seen = VAR.get()
        VAR.set("inside")
        return {"seen": seen}

    def reader(ctx):
        return {"seen": VAR.get()}

    names = [_register("setter", setter, blocking=False), _register("reader", reader, blocking=False)]
    try:
        pipe = sb.Pipeline.from_dict({"steps": [{"use": n} for n in names]})
        token = VAR.set("outer")
        try:
            result = pipe.run()
            assert result.outputs == {"setter": {"seen": "outer"}, "reader": {"seen": "inside"}}
            assert VAR.get() == "outer"  # what the run set stays in the run
        finally:
            VAR.reset(token)
    finally:
        for n in names:
            sb.techniques.registry.unregister_technique(n)


def test_a_sync_run_that_suspends_on_a_retry_finishes_in_a_task_with_the_same_context():
    calls = []

    def flaky(ctx):
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            VAR.set("first attempt")
            raise ValueError("not yet")
        return {"attempt": ctx.attempt, "var": VAR.get()}

    name = _register("flaky", flaky, blocking=False)
    try:
        pipe = sb.Pipeline.from_dict(
            {"steps": [{"use": name, "retry": {"max_attempts": 2, "initial_delay": 0.01}}]}
        )
        for _ in range(2):
            calls.clear()
            result = pipe.run()
            assert calls == [1, 2]
            assert result.output == {"attempt": 2, "var": "first attempt"}
            assert [(r.status, r.attempts) for r in result.records] == [("ran", 2)]
            assert VAR.get() == "caller"
    finally:
        sb.techniques.registry.unregister_technique(name)


def test_an_async_callback_a_sync_technique_defers_runs_in_a_task():
    done = []

    async def store(result):
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        done.append((result.output, asyncio.current_task() is not None))

    def deferring(ctx):
        ctx.defer(store)
        return {"n": 1}

    name = _register("deferring", deferring, blocking=False)
    try:
        assert sb.Pipeline.from_dict({"steps": [{"use": name}]}).run().output == {"n": 1}
        assert done == [({"n": 1}, True)]
    finally:
        sb.techniques.registry.unregister_technique(name)


def test_a_sync_technique_that_fails_or_interrupts_propagates_and_callbacks_still_run():
    CALLED.clear()

    def failing(ctx):
        asyncio.get_running_loop().call_soon(CALLED.append, "scheduled before failing")
        raise ValueError("broken")

    names = [_register("failing", failing, blocking=False)]
    try:
        pipe = sb.Pipeline.from_dict({"steps": [{"use": names[0]}]})
        with pytest.raises(sb.errors.NodeExecutionError, match="broken") as info:
            pipe.run()
        assert [(r.node_id, r.status) for r in info.value.result.records] == [("failing", "failed")]
        assert CALLED == ["scheduled before failing"]
        with pytest.raises(KeyboardInterrupt):
            chain("add", "interrupt").run()
        assert chain("add").run({"x": 5}).output == {"value": 6}
    finally:
        for n in names:
            sb.techniques.registry.unregister_technique(n)


def test_a_technique_registered_async_after_a_sync_run_runs_in_a_task():
    name = _register("changes", lambda ctx: {"task": False}, blocking=False)
    try:
        pipe = sb.Pipeline.from_dict({"steps": [{"use": name}]})
        assert pipe.run().output == {"task": False}

        async def now_async(ctx):
            async with asyncio.timeout(5):
                return {"task": asyncio.current_task() is not None}

        _register("changes", now_async)
        assert pipe.run().output == {"task": True}
    finally:
        sb.techniques.registry.unregister_technique(name)


def test_run_ids_are_distinct_12_hex_digits_also_in_a_forked_child():
    import multiprocessing

    pipe = chain("add")
    ids = [pipe.run({"x": 1}).run_id for _ in range(300)]
    assert len(set(ids)) == 300
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")
    parent_next = pipe.run({"x": 1}).run_id
    with ctx.Pool(1) as pool:
        child = pool.apply(_run_id_in_child)
    assert child != pipe.run({"x": 1}).run_id and child != parent_next
    assert len(child) == 12


def _run_id_in_child():
    from sibyl_nb.pipeline import new_run_id

    return new_run_id()


def test_a_finished_run_leaves_no_reference_cycle_behind():
    import gc

    pipe = chain("add")
    pipe.run({"x": 1})
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds stays in gc.garbage to be looked at
    try:
        for _ in range(20):
            pipe.run({"x": 1})
        gc.collect()
        # only the runs' own objects count: other threads of the test process (loops, pools, stores of
        # earlier tests) may leave garbage of their own meanwhile
        left = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("sibyl_nb")})
        assert left == []  # freed by reference counting as each run ended
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_kernel_interrupt_cancels_a_sync_run_waiting_on_a_retry_and_keeps_what_finished():
    """The taskless start's hand-over: SIGINT while a sync pipeline waits 30 s for a retry (in the task
    that took the run over, on the helper thread) cancels it through that task."""

    def never(ctx):
        raise ValueError("again")

    name = _register("never", never, blocking=False)
    events = []
    pipe = sb.Pipeline.from_dict(
        {
            "steps": [
                {"use": "sync_bridge.add"},
                {"use": name, "retry": {"max_attempts": 2, "initial_delay": 30, "backoff": "fixed"}},
            ]
        }
    )
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))

    async def cell():
        timer.start()
        return pipe.run({"x": 1}, observers=[events.append])

    loop = asyncio.new_event_loop()
    t0 = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
        sb.techniques.registry.unregister_technique(name)
    assert time.perf_counter() - t0 < 8  # cancelled, not left to the 10 s the caller waits for an unwind
    assert [e.node_id for e in events if e.kind == "node_finished"] == ["add"]
    assert [e.data["attempt"] for e in events if e.kind == "node_retrying"] == [1]
