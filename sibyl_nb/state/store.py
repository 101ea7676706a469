"""Workflow state: one JSON object per ``workflow_id``, on the same stores as sessions.

The seed's API (``save_state`` / ``load_state`` / ``update_state``) maps onto the store's key-value
facet: a save is a put, an update is the store's atomic read-modify-write, so concurrent updaters
(threads, processes, machines on Redis/PostgreSQL) never lose each other's keys.

Async methods run network backends (Redis, SQL) in a worker thread so a slow server never stalls the
event loop; memory and diskcache answer in microseconds and are called inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import StoreError
from ..stores.base import Store
from .settings import open_kind_store

__all__ = ["StateStore", "open_state_store", "deep_merge"]


def deep_merge(base: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``patch`` into ``base`` recursively (nested dicts merge, everything else replaces)."""
    for key, value in patch.items():
        cur = base.get(key)
        if isinstance(cur, dict) and isinstance(value, Mapping):
            deep_merge(cur, value)
        else:
            base[key] = value
    return base


class StateStore:
    """State dicts keyed by workflow id, under ``prefix``, expiring ``ttl`` seconds after the last write."""

    def __init__(self, store: Store, *, prefix: str = "", ttl: float | None = None) -> None:
        self.store = store
        self.prefix = prefix
        self.ttl = None if ttl in (None, 0, "") else float(ttl)
        self._offload = store.backend in ("redis", "sql")

    @property
    def backend(self) -> str:
        return self.store.backend

    def key(self, workflow_id: str) -> str:
        if not isinstance(workflow_id, str) or not workflow_id:
            raise StoreError(f"workflow_id must be a non-empty string, got {workflow_id!r}")
        return self.prefix + workflow_id

    # ---------------------------------------------------------------- sync
    def load_sync(self, workflow_id: str, default: Any = None) -> Any:
        """The saved state, or ``default`` when none was saved (or it expired)."""
        return self.store.kv_get(self.key(workflow_id), default)

    def save_sync(self, workflow_id: str, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise StoreError(f"state must be a dict, got {type(state).__name__}")
        self.store.kv_put(self.key(workflow_id), dict(state), ttl=self.ttl)

    def update_sync(self, workflow_id: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        """Atomically replace the state by ``fn(current)`` (``current`` is ``{}`` when absent).

        ``fn`` may mutate its argument and return None. It can run more than once (optimistic
        backends retry on conflict), so it must not have side effects.
        """

        def step(cur: Any) -> dict[str, Any]:
            if cur is None:
                cur = {}
            if not isinstance(cur, dict):
                raise StoreError(f"state of {workflow_id!r} is a {type(cur).__name__}, not a dict")
            out = fn(cur)
            return cur if out is None else out

        return self.store.kv_update(self.key(workflow_id), step, default={}, ttl=self.ttl)

    def merge_sync(
        self, workflow_id: str, updates: Mapping[str, Any], *, deep: bool = False
    ) -> dict[str, Any]:
        """Atomically merge ``updates`` into the state (shallow, or recursive with ``deep=True``)."""
        if not isinstance(updates, Mapping):
            raise StoreError(f"updates must be a dict, got {type(updates).__name__}")
        patch = dict(updates)
        if deep:
            return self.update_sync(workflow_id, lambda cur: deep_merge(cur, patch))
        return self.update_sync(workflow_id, lambda cur: cur.update(patch))

    def delete_sync(self, workflow_id: str) -> bool:
        return self.store.kv_delete(self.key(workflow_id))

    def ids_sync(self, prefix: str = "") -> list[str]:
        """Workflow ids with saved state (starting with ``prefix``), sorted."""
        n = len(self.prefix)
        return [k[n:] for k in self.store.kv_keys(self.prefix + prefix)]

    # ---------------------------------------------------------------- async
    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._offload:
            return await asyncio.to_thread(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    async def load(self, workflow_id: str, default: Any = None) -> Any:
        return await self._call(self.load_sync, workflow_id, default)

    async def save(self, workflow_id: str, state: Mapping[str, Any]) -> None:
        await self._call(self.save_sync, workflow_id, state)

    async def update(self, workflow_id: str, fn: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        return await self._call(self.update_sync, workflow_id, fn)

    async def merge(
        self, workflow_id: str, updates: Mapping[str, Any], *, deep: bool = False
    ) -> dict[str, Any]:
        return await self._call(self.merge_sync, workflow_id, updates, deep=deep)

    async def delete(self, workflow_id: str) -> bool:
        return await self._call(self.delete_sync, workflow_id)

    async def ids(self, prefix: str = "") -> list[str]:
        return await self._call(self.ids_sync, prefix)

    def __repr__(self) -> str:
        return f"<StateStore {self.store!r} prefix={self.prefix!r} ttl={self.ttl}>"


def open_state_store(config: Mapping[str, Any] | None = None) -> StateStore:
    """A :class:`StateStore` from a ``state_management`` config (``backend``, ``redis_url``,
    ``database_url``, ``path``, ``namespace``, ``ttl``); diskcache under ``$SIBYL_HOME/state`` by default.

    On Redis the namespace is the key prefix itself (``namespace: "workflow:"`` stores
    ``workflow:<id>``); on the other backends it prefixes keys inside the state table/folder.
    """
    cfg = dict(config or {})
    store = open_kind_store("state", cfg)
    namespace = cfg.get("namespace") or ""
    prefix = "" if store.backend == "redis" else str(namespace)
    return StateStore(store, prefix=prefix, ttl=cfg.get("ttl"))
