"""Token-callback plumbing shared by provider wrappers (replay, fallback).

``complete(messages, on_token=cb)`` is the one streaming entry point the notebook needs: a provider
that streams calls ``cb(delta)`` per delta; a provider that cannot stream still answers, and these
helpers then hand ``cb`` the whole text once, so a display never stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from .base import Completion, Message, Provider

__all__ = ["TokenCallback", "emit_token", "accepts_on_token", "complete_with_tokens", "stream_via_complete"]

TokenCallback = Callable[[str], Any]  # sync, or returning an awaitable


async def emit_token(on_token: TokenCallback | None, delta: str) -> None:
    """Call ``on_token(delta)``; await the result when the callback is async."""
    if on_token is None or not delta:
        return
    result = on_token(delta)
    if inspect.isawaitable(result):
        await result


def accepts_on_token(provider: Provider) -> bool:
    """Whether ``provider.complete`` takes ``on_token`` (by name or through ``**params``)."""
    try:
        sig = inspect.signature(provider.complete)
    except (TypeError, ValueError):  # pragma: no cover - builtins / C callables
        return False
    return any(
        p.name == "on_token" or p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


class _Tap:
    """Forwards deltas and remembers whether any arrived (sync-callable, like the user's callback)."""

    __slots__ = ("callback", "called")

    def __init__(self, callback: TokenCallback) -> None:
        self.callback = callback
        self.called = False

    def __call__(self, delta: str) -> Any:
        self.called = True
        return self.callback(delta)


async def complete_with_tokens(
    provider: Provider, messages: list[Message], on_token: TokenCallback | None, params: dict[str, Any]
) -> Completion:
    """``provider.complete`` with ``on_token`` honoured even when the provider ignores it."""
    if on_token is None:
        return await provider.complete(messages, **params)
    if not accepts_on_token(provider):
        completion = await provider.complete(messages, **params)
        await emit_token(on_token, completion.text)
        return completion
    tap = _Tap(on_token)
    completion = await provider.complete(messages, on_token=tap, **params)
    if not tap.called:
        await emit_token(on_token, completion.text)
    return completion


async def stream_via_complete(
    provider: Provider, messages: list[Message], **params: Any
) -> AsyncIterator[str]:
    """An async iterator of deltas built on ``complete(on_token=...)`` (so wrappers stream too)."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def run() -> Completion:
        try:
            return await provider.complete(messages, on_token=queue.put_nowait, **params)
        finally:
            queue.put_nowait(done)

    task = asyncio.ensure_future(run())
    try:
        while (item := await queue.get()) is not done:
            yield item
        await task  # re-raises the provider's error, if any
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
