"""Run a coroutine to completion from a synchronous caller, on a private loop in a helper thread.

Why not ``nest_asyncio`` or the kernel's own loop: a notebook cell already runs inside ipykernel's
event loop, which cannot be re-entered; ``nest_asyncio`` is archived. A helper thread with its own
loop works everywhere (kernel, terminal IPython, plain scripts) and leaves the calling thread free
to do something useful while it waits: here, repaint the live widget. Interrupting the kernel
cancels the run instead of orphaning it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["run_in_thread"]


def run_in_thread(coro: Coroutine[Any, Any, Any], *, tick: Callable[[], None] | None = None,
                  interval: float = 0.05) -> Any:
    """Run ``coro`` on a new event loop in a daemon thread; call ``tick()`` every ``interval`` s meanwhile.

    Returns the coroutine's value or re-raises its exception in the caller's thread. A
    ``KeyboardInterrupt`` while waiting cancels the coroutine, waits for it to unwind, and re-raises.
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
