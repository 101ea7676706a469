"""Stores shared by sessions, workflow state, checkpoints and the step cache.

One interface (:class:`Store`) with two facets, a per-session message log and a JSON key-value
map, on four backends: memory, diskcache (the embedded default), Redis and SQL (SQLite/PostgreSQL).
Backends import their client library only when opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports
from .base import Message, SessionData, Store, mask_url
from .factory import STORAGE_NAMES, canonical_storage, close_shared_stores, open_store, shared_store
from .memory import MemoryStore

if TYPE_CHECKING:  # pragma: no cover
    from .disk import DiskStore
    from .redis_store import RedisStore
    from .sql import SQLStore

__all__ = [
    "Store",
    "SessionData",
    "Message",
    "MemoryStore",
    "DiskStore",
    "RedisStore",
    "SQLStore",
    "open_store",
    "shared_store",
    "close_shared_stores",
    "canonical_storage",
    "STORAGE_NAMES",
    "mask_url",
]

_LAZY = {"DiskStore": ".disk", "RedisStore": ".redis_store", "SQLStore": ".sql"}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
