"""Run the async engine from synchronous code (``Pipeline.run``, the notebook magic).

Cheap first: a run whose first step never suspends (sync techniques, a cache hit) finishes inside
that step. :func:`run_sync` creates the run's :class:`asyncio.Task` on a reused per-thread loop and
runs the task's first step itself, as Python 3.12's eager tasks do (a real task: ``current_task``,
``asyncio.timeout``, ``TaskGroup`` and context variables all behave as under ``run_until_complete``),
without the loop's polling round trips. Only a run that suspends goes on to the loop.

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
import sys
import threading
from asyncio import events
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["run_in_thread", "run_sync", "LOOP_STRATEGIES"]

LOOP_STRATEGIES = ("thread", "caller")
_local = threading.local()


def _thread_loop(attr: str) -> asyncio.AbstractEventLoop:
    """This thread's reusable loop (``loop``: for runs with no loop running; ``side``: inside one)."""
    loop = getattr(_local, attr, None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        setattr(_local, attr, loop)
    return loop


def _first_step(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Create ``coro``'s task on ``loop`` and run its first step now, ``loop`` standing as the running loop.

    The step is the very callback the loop would run first (the task's own ``__step``), taken from the
    loop's ready queue; everything else it schedules stays queued for the loop. A ``KeyboardInterrupt``
    in the step propagates to the caller, as it does out of ``run_until_complete``.
    """
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
        handle._run()
    except BaseException:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: it propagates from here, not from "never retrieved" at exit
        raise
    finally:
        events._set_running_loop(outer)
        sys.set_asyncgen_hooks(*hooks)
    return task


def _finished(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> bool:
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
    task: asyncio.Task[Any],
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


def run_sync(coro: Coroutine[Any, Any, Any], *, loop: str = "thread") -> Any:
    """Run ``coro`` to completion from sync code, whether or not this thread already runs a loop.

    With no running loop, a per-thread loop is reused (no loop set-up cost per run). Inside a running
    loop: ``loop="thread"`` (default) finishes a run that suspends in a helper thread;
    ``loop="caller"`` re-enters the caller's loop with ``nest_asyncio``.
    """
    if loop not in LOOP_STRATEGIES:
        coro.close()
        from ..errors import ConfigError

        raise ConfigError(f"loop must be one of {', '.join(LOOP_STRATEGIES)}, got {loop!r}")
    running = events._get_running_loop()
    if running is None:
        own = _thread_loop("loop")
        task = _first_step(own, coro)
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
    task = _first_step(side, coro)
    if _finished(side, task):
        return task.result()
    if getattr(_local, "side", None) is side:
        _local.side = None  # the helper thread owns (and closes) this loop now
    return _finish_in_thread(side, task)
