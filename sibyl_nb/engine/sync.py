"""Run the async engine from synchronous code (``Pipeline.run``, the notebook magic).

Default: a private loop in a helper thread. A notebook cell already runs inside ipykernel's event
loop, which cannot be re-entered; a helper thread with its own loop works everywhere (kernel,
terminal IPython, plain scripts) and leaves the calling thread free to do something useful while it
waits: repaint the live widget. Interrupting the kernel cancels the run instead of orphaning it.

Opt-in ``loop="caller"``: run on the caller's own running loop through ``nest_asyncio`` (archived
upstream, so not the default). Use it when techniques hold objects bound to the notebook's loop
(an ``aiohttp`` session made in a cell), which cannot be awaited from another loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["run_in_thread", "run_sync", "LOOP_STRATEGIES"]

LOOP_STRATEGIES = ("thread", "caller")
_local = threading.local()


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
    box: dict[str, Any] = {}
    ready = threading.Event()
    done = threading.Event()

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            task = loop.create_task(coro)
            box["loop"], box["task"] = loop, task
            ready.set()
            box["value"] = loop.run_until_complete(task)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc
        finally:
            ready.set()
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
        ready.wait()
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        done.wait(10)
        raise
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_sync(coro: Coroutine[Any, Any, Any], *, loop: str = "thread") -> Any:
    """Run ``coro`` to completion from sync code, whether or not this thread already runs a loop.

    With no running loop, a per-thread loop is reused (no loop set-up cost per run). Inside a running
    loop: ``loop="thread"`` (default) uses :func:`run_in_thread`; ``loop="caller"`` re-enters the
    caller's loop with ``nest_asyncio``.
    """
    if loop not in LOOP_STRATEGIES:
        coro.close()
        from ..errors import SibylError

        raise SibylError(f"loop must be one of {', '.join(LOOP_STRATEGIES)}, got {loop!r}")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None:
        own = getattr(_local, "loop", None)
        if own is None or own.is_closed():
            own = _local.loop = asyncio.new_event_loop()
        return own.run_until_complete(coro)
    if loop == "caller":
        import nest_asyncio

        nest_asyncio.apply(running)
        return running.run_until_complete(coro)
    return run_in_thread(coro)
