"""``open_store(storage, **config)``: the seed's storage names -> a store; ``shared_store`` caches one
per configuration so every run of a pipeline talks to the same connection pool / in-process dict."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from ..errors import StoreError
from .base import Store

__all__ = ["open_store", "shared_store", "close_shared_stores", "STORAGE_NAMES", "canonical_storage"]

STORAGE_NAMES: dict[str, str] = {
    "memory": "memory",
    "inmemory": "memory",
    "in_memory": "memory",
    "diskcache": "diskcache",
    "disk": "diskcache",
    "file": "diskcache",
    "local": "diskcache",
    "redis": "redis",
    "database": "sql",
    "db": "sql",
    "sql": "sql",
    "sqlite": "sql",
    "postgres": "sql",
    "postgresql": "sql",
    "sqlalchemy": "sql",
}

# Config keys each backend understands (everything else in a technique's config is ignored here).
_KEYS = {
    "memory": ("ttl", "name"),
    "diskcache": ("ttl", "directory", "path", "lock_timeout"),
    "redis": ("ttl", "redis_url", "url", "key_prefix", "kv_prefix", "namespace", "socket_timeout"),
    "sql": ("ttl", "database_url", "url", "table", "kv_table", "create_tables"),
}


def canonical_storage(storage: str | None) -> str:
    """``"database"`` -> ``"sql"`` etc.; None/empty -> ``"diskcache"`` (the embedded default)."""
    if not storage:
        return "diskcache"
    key = str(storage).strip().lower().replace("-", "_")
    try:
        return STORAGE_NAMES[key]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(key, list(STORAGE_NAMES), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise StoreError(
            f"unknown storage {storage!r}{hint} (choose memory, diskcache, redis or database)"
        ) from None


def open_store(storage: str | None = None, **config: Any) -> Store:
    """Open a new store. ``storage``: memory | diskcache (default) | redis | database/sql/sqlite/postgres.

    Backend options: ``ttl`` (seconds), diskcache ``directory``; redis ``redis_url`` (default
    ``$REDIS_URL``), ``key_prefix``, ``kv_prefix``; sql ``database_url`` (None: SQLite under
    ``sibyl_home``), ``table``, ``kv_table``. A None/empty URL means the embedded default. ``storage:
    sqlite`` with a non-SQLite URL, or ``postgres`` without one, is refused.
    """
    name = canonical_storage(storage)
    cfg = {k: v for k, v in config.items() if k in _KEYS[name] and v not in (None, "")}
    ttl = cfg.pop("ttl", None)
    ttl = None if ttl is None else float(ttl)
    if name == "memory":
        from .memory import MemoryStore

        return MemoryStore(ttl=ttl, **cfg)
    if name == "diskcache":
        from .disk import DiskStore

        directory = cfg.pop("directory", None) or cfg.pop("path", None)
        return DiskStore(directory, ttl=ttl, timeout=float(cfg.pop("lock_timeout", 60.0)))
    if name == "redis":
        from .redis_store import RedisStore

        url = cfg.pop("redis_url", None) or cfg.pop("url", None)
        if "namespace" in cfg and "kv_prefix" not in cfg:
            cfg["kv_prefix"] = cfg.pop("namespace")
        cfg.pop("namespace", None)
        return RedisStore(url, ttl=ttl, **cfg)
    from .sql import SQLStore, normalize_database_url

    url = cfg.pop("database_url", None) or cfg.pop("url", None)
    kind = str(storage or "").lower()
    if kind == "sqlite" and url and not normalize_database_url(url).startswith("sqlite"):
        raise StoreError(f"storage: sqlite with a non-SQLite database_url {url!r}")
    if kind in ("postgres", "postgresql") and not url:
        raise StoreError(
            "storage: postgres needs database_url (e.g. postgresql://user@host:5432/db); "
            "set DATABASE_URL or use storage: database for the embedded SQLite default"
        )
    return SQLStore(url, ttl=ttl, **cfg)


_SHARED: dict[tuple[Any, ...], Store] = {}
_SHARED_LOCK = threading.Lock()


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def shared_store(storage: str | None = None, **config: Any) -> Store:
    """Like :func:`open_store`, but one instance per (storage, config) for the whole process.

    The in-process ``memory`` store only makes sense shared: a second pipeline run must see the
    first run's messages.
    """
    name = canonical_storage(storage)
    key = (name, str(storage or "").lower() if name == "sql" else "", _freeze(config))
    with _SHARED_LOCK:
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = open_store(storage, **config)
        return store


def close_shared_stores() -> None:
    """Close and forget every shared store (tests; the next call reopens)."""
    with _SHARED_LOCK:
        stores = list(_SHARED.values())
        _SHARED.clear()
    for s in stores:
        try:
            s.close()
        except Exception:  # pragma: no cover - closing is best effort
            pass
