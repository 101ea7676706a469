"""Where technique calls run. The local executor is the default; a Dask one plugs in at this seam."""

from __future__ import annotations

import asyncio
from typing import Any

from ..techniques.context import StepContext
from ..techniques.registry import TechniqueInfo

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Async techniques are awaited; a blocking sync one goes to a thread so siblings overlap."""

    name = "local"

    async def call(self, info: TechniqueInfo, ctx: StepContext, *, offload: bool) -> Any:
        if info.is_async:
            return await info.fn(ctx)
        if offload:
            return await asyncio.to_thread(info.fn, ctx)
        out = info.fn(ctx)
        if asyncio.iscoroutine(out):  # a sync wrapper that returned a coroutine
            return await out
        return out
