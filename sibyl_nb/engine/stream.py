"""A run as an iterator of its events: ``pipe.stream(inputs)`` (async) and ``pipe.stream_sync(inputs)``.

The iterator is one more subscriber of the run's event bus, so it sees exactly what logging,
checkpoints and the widget see, in the order they see it: ``run_started``, ``node_started``,
``token`` (a generation's text as the provider streams it), ``node_finished``…, and last
``run_finished`` (its ``data["result"]`` is the :class:`RunResult`) or ``interrupted``. A failing
run yields its ``run_failed`` event and then raises the run's error, as ``execute`` would.

A subscriber with ``wants_tokens = True`` asks generation nodes to stream from their provider; a
run nobody streams sends ordinary (non-streaming) requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue as thread_queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from .events import Event

__all__ = ["stream_events", "iterate_sync", "wants_tokens"]

_DONE = object()


def wants_tokens(subscribers: Any) -> bool:
    """Whether any subscriber asked for ``token`` events (generation then streams from its provider)."""
    return any(getattr(fn, "wants_tokens", False) for fn in subscribers)


class _Tap:
    """The iterator's subscriber: queues events, from the loop's thread or any other."""

    wants_tokens = True

    def __init__(self, queue: asyncio.Queue[Any], loop: asyncio.AbstractEventLoop) -> None:
        self.queue = queue
        self.loop = loop
        self.thread = threading.get_ident()

    def __call__(self, event: Event) -> None:
        if threading.get_ident() == self.thread:
            self.queue.put_nowait(event)
        else:  # a sync technique on a worker thread emitting tokens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)


async def stream_events(start: Callable[[Callable[[Event], None]], Awaitable[Any]]) -> AsyncIterator[Event]:
    """Run ``start(observer)`` (a coroutine that runs the pipeline with ``observer`` subscribed) and
    yield each event as it happens. Closing the iterator early cancels the run."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    tap = _Tap(queue, loop)
    task = asyncio.ensure_future(start(tap))
    task.add_done_callback(lambda _t: queue.put_nowait(_DONE))
    try:
        while (item := await queue.get()) is not _DONE:
            yield item
        while not queue.empty():  # events queued from another thread after the run ended
            item = queue.get_nowait()
            if item is not _DONE:
                yield item
        task.result()  # the run's own error, after its run_failed event
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def iterate_sync(make: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    """A plain iterator over the async iterator ``make()`` builds, for scripts and notebook cells.

    Without a running loop in this thread the items are pulled on this thread's reusable loop (the
    one ``Pipeline.run`` uses); inside a running loop (a notebook cell) on a helper thread's loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        yield from _iterate_here(make)
        return
    yield from _iterate_in_thread(make)


def _iterate_here(make: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    from .sync import _thread_loop

    loop = _thread_loop("loop")  # the loop Pipeline.run uses on this thread
    agen = make()
    try:
        while True:
            try:
                item = loop.run_until_complete(agen.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        loop.run_until_complete(agen.aclose())  # type: ignore[attr-defined]


def _iterate_in_thread(make: Callable[[], AsyncIterator[Any]]) -> Iterator[Any]:
    # unbounded: the run's loop never waits for the reader (events are small; the run holds its results)
    items: thread_queue.SimpleQueue[tuple[str, Any]] = thread_queue.SimpleQueue()
    stop = threading.Event()
    box: dict[str, Any] = {}

    async def pump() -> None:
        agen = make()
        try:
            async for item in agen:
                if stop.is_set():
                    return
                items.put(("item", item))
        finally:
            await agen.aclose()  # type: ignore[attr-defined]

    def target() -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            task = loop.create_task(pump())
            box["loop"], box["task"] = loop, task
            loop.run_until_complete(task)
            items.put(("done", None))
        except BaseException as exc:  # handed to the caller's thread
            items.put(("error", exc))
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=target, name="sibyl-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        loop, task = box.get("loop"), box.get("task")
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        thread.join(10)


class StreamingMixin:
    """``stream`` / ``stream_sync`` for :class:`~sibyl_nb.pipeline.Pipeline` (built on ``execute``)."""

    execute: Callable[..., Awaitable[Any]]

    def stream(self, inputs: Any = None, **kwargs: Any) -> AsyncIterator[Event]:
        """Run like ``execute(inputs, **kwargs)`` and yield its events as they happen (async iterator)."""
        observers = tuple(kwargs.pop("observers", ()))
        return stream_events(lambda tap: self.execute(inputs, observers=(*observers, tap), **kwargs))

    def stream_sync(self, inputs: Any = None, **kwargs: Any) -> Iterator[Event]:
        """:meth:`stream` as a plain iterator, for scripts (and notebook cells)."""
        return iterate_sync(lambda: self.stream(inputs, **kwargs))
