"""Run the async engine from synchronous code (``Pipeline.run``, the notebook magic).

Cheap first: a run whose first step never suspends (sync techniques, a cache hit) finishes inside
that step. :func:`run_sync` creates the run's :class:`asyncio.Task` on a reused per-thread loop and
runs the task's first step itself, as Python 3.12's eager tasks do (a real task: ``current_task``,
``asyncio.timeout``, ``TaskGroup`` and context variables all behave as under ``run_until_complete``),
without the loop's polling round trips. Only a run that suspends goes on to the loop. A pipeline of
sync techniques skips even the task (``taskless``): its first step runs in a copy of the caller's
context with no task, and the engine calls :func:`in_task` before any code that could need one
(an async technique, a timeout, an awaitable a sync technique returned), which hands the run to a
task at that point.

Inside a running loop (a notebook cell runs inside ipykernel's loop, which cannot be re-entered) the
first step runs the same way on a private loop; a run that suspends is finished by that loop in a
helper thread, which works everywhere (kernel, terminal IPython, plain scripts) and leaves the
calling thread free to do something useful while it waits: repaint the live widget. Kernel ›
Interrupt raises ``KeyboardInterrupt`` in the caller: during the first step it propagates from the
technique's own frame; while waiting on the helper thread it cancels the run, waits for it to
unwind (so what finished is recorded), and re-raises.

Opt-in ``loop="caller"``: run on the caller's own running loop through ``nest_asyncio`` (archived
upstream, so not the default). Use it when techniques hold objects bound to the notebook's loop
(an ``aiohttp`` session made in a cell), which cannot be awaited from another loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from asyncio import events
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["run_in_thread", "run_sync", "in_task", "LOOP_STRATEGIES"]

LOOP_STRATEGIES = ("thread", "caller")
_local = threading.local()


def _thread_loop(attr: str) -> asyncio.AbstractEventLoop:
    """This thread's reusable loop (``loop``: for runs with no loop running; ``side``: inside one)."""
    loop = getattr(_local, attr, None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        setattr(_local, attr, loop)
    return loop


def _first_step(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], taskless: bool = False
) -> asyncio.Future[Any]:
    """Run ``coro``'s first step now, ``loop`` standing as the running loop; a future for the rest.

    By default the step is the very callback the loop would run first (a new task's own ``__step``),
    taken from the loop's ready queue; everything else it schedules stays queued for the loop.
    ``taskless``: the step runs without a task (no task to create: a few microseconds saved per run)
    in a copy of the caller's context, as a task's would; the coroutine promises to call
    :func:`in_task` before anything that needs a current task. If it suspends, a task created in that
    context takes it over from there. A ``KeyboardInterrupt`` in the step propagates to the caller,
    as it does out of ``run_until_complete``.
    """
    if taskless:
        context = contextvars.copy_context()
        task: asyncio.Future[Any] | None = None
    else:
        task = loop.create_task(coro)
        ready: Any = getattr(loop, "_ready", None)  # BaseEventLoop's queue of callbacks due now
        if ready is None or len(ready) != 1:
            return task  # not a loop we know, or other callbacks are due first: leave it all to the loop
        handle = ready.popleft()
    outer = events._get_running_loop()
    hooks = sys.get_asyncgen_hooks()
    events._set_running_loop(loop)
    first_iter = getattr(loop, "_asyncgen_firstiter_hook", None)
    if first_iter is not None:  # async generators started in the step are finalised by this loop
        sys.set_asyncgen_hooks(firstiter=first_iter, finalizer=loop._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
    try:
        if task is not None:
            handle._run()
            return task
        pending = context.run(coro.send, None)
    except StopIteration as stop:  # taskless: finished in its first step (the common case)
        done = loop.create_future()
        done.set_result(stop.value)
        return done
    except (KeyboardInterrupt, SystemExit):
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: it propagates from here, not from "never retrieved" at exit
        raise
    except BaseException as exc:  # taskless: failed in its first step
        if task is not None:
            raise
        done = loop.create_future()
        if isinstance(exc, asyncio.CancelledError):
            done.cancel()
        else:
            done.set_exception(exc)
        return done
    finally:
        events._set_running_loop(outer)
        sys.set_asyncgen_hooks(*hooks)
    return context.run(loop.create_task, _resume(_Rest(coro, pending)))


class _Rest:
    """What remains of a coroutine whose first step ran outside a task, for the task that takes it
    over: it waits on what the step was waiting for, then drives the coroutine as ``await`` does."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro = coro
        self._pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._pending
        value: Any = None
        error: BaseException | None = None
        waiting = pending is not None  # a bare yield (asyncio.sleep(0)): the loop already gave way
        while True:
            if waiting:
                try:
                    value = yield pending
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:  # a cancellation thrown into the task: hand it on
                    error = exc
            waiting = True
            try:
                pending = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            value, error = None, None


async def _resume(rest: _Rest) -> Any:
    return await rest


async def in_task() -> None:
    """Make sure what follows runs inside an asyncio task (``asyncio.timeout``, ``TaskGroup``, anyio
    and user code may need ``current_task()``): a run whose first step runs taskless (see
    :func:`_first_step`) gives way to the loop once here, and a task carries on."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


def _finished(loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> bool:
    return task.done() and not getattr(loop, "_ready", True)


def run_in_thread(
    coro: Coroutine[Any, Any, Any],
    *,
    tick: Callable[[], None] | None = None,
    interval: float = 0.05,
    on_interrupt: Callable[[], None] | None = None,
) -> Any:
    """Run ``coro`` on a new event loop in a daemon thread; call ``tick()`` every ``interval`` s meanwhile.

    Returns the coroutine's value or re-raises its exception in the caller's thread. A
    ``KeyboardInterrupt`` while waiting calls ``on_interrupt()`` (the notebook's live view uses it to
    stop sync techniques that run inline, where a task cancel only lands at the next ``await``),
    cancels the coroutine, waits for it to unwind, and re-raises.
    """
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    return _finish_in_thread(loop, task, tick=tick, interval=interval, on_interrupt=on_interrupt)


def _finish_in_thread(
    loop: asyncio.AbstractEventLoop,
    task: asyncio.Future[Any],
    *,
    tick: Callable[[], None] | None = None,
    interval: float = 0.05,
    on_interrupt: Callable[[], None] | None = None,
) -> Any:
    """Run ``loop`` until ``task`` is done in a daemon thread (then close the loop); see :func:`run_in_thread`."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            asyncio.set_event_loop(loop)
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                done.set()

    thread = threading.Thread(target=target, name="sibyl-run", daemon=True)
    thread.start()
    try:
        while not done.wait(interval):
            if tick is not None:
                tick()
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        if not loop.is_closed():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # closed in between: the run already ended
                pass
        done.wait(10)
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_sync(coro: Coroutine[Any, Any, Any], *, loop: str = "thread", taskless: bool = False) -> Any:
    """Run ``coro`` to completion from sync code, whether or not this thread already runs a loop.

    With no running loop, a per-thread loop is reused (no loop set-up cost per run). Inside a running
    loop: ``loop="thread"`` (default) finishes a run that suspends in a helper thread;
    ``loop="caller"`` re-enters the caller's loop with ``nest_asyncio``. ``taskless``: ``coro`` awaits
    :func:`in_task` before anything that needs a current task, so its first step may run without one.
    """
    if loop not in LOOP_STRATEGIES:
        coro.close()
        from ..errors import ConfigError

        raise ConfigError(f"loop must be one of {', '.join(LOOP_STRATEGIES)}, got {loop!r}")
    running = events._get_running_loop()
    if running is None:
        own = _thread_loop("loop")
        task = _first_step(own, coro, taskless)
        if _finished(own, task):
            return task.result()
        return own.run_until_complete(task)
    if loop == "caller":
        import nest_asyncio

        nest_asyncio.apply(running)
        return running.run_until_complete(coro)
    side = _thread_loop("side")
    if running is side:  # a technique in a side-loop run runs a pipeline itself: a loop of its own
        side = asyncio.new_event_loop()
    task = _first_step(side, coro, taskless)
    if _finished(side, task):
        return task.result()
    if getattr(_local, "side", None) is side:
        _local.side = None  # the helper thread owns (and closes) this loop now
    return _finish_in_thread(side, task)
