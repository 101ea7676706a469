"""A hot-path ``put`` for per-step checkpoint writes.

On SQLite, the SQL store's ``kv_put`` spends most of its ~140 µs in SQLAlchemy (pool checkout,
statement compilation, the BEGIN IMMEDIATE hook), against ~50 µs for the write itself. A checkpoint
written after every step cannot afford that, so this writer keeps one raw DBAPI connection from the
store's own engine for the life of a run and issues the same single-statement upsert the store
does (autocommit: one statement is one atomic transaction), into the same table and row format, so
everything the store reads back (``kv_get``, ``kv_keys``, pruning) is unchanged.

Any other backend, or a SQL store that does not look the way this expects, simply uses ``kv_put``.
(Kept here rather than in ``sibyl_nb.stores`` so the stores stay one code path per backend; if the
store grows a fast put of its own, this module can go.)
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import StoreError
from ..stores.base import Store, to_json

__all__ = ["KVWriter"]


class KVWriter:
    """``put(key, value)`` with the semantics of ``store.kv_put(key, value)`` (no ttl)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._conn: Any = None
        self._sql: str | None = None
        self._primed = False
        if (
            store.backend == "sql"
            and getattr(store, "dialect", None) == "sqlite"
            and hasattr(store, "_engine")
            and hasattr(store, "_kv")
            and hasattr(store, "_ts")
        ):
            self._sql = (
                f'INSERT INTO {store._kv} ("key", value, updated_at, expires_at) '  # type: ignore[attr-defined]
                'VALUES (?, json(?), ?, NULL) ON CONFLICT ("key") DO UPDATE SET '
                "value = excluded.value, updated_at = excluded.updated_at, expires_at = NULL"
            )

    @property
    def fast(self) -> bool:
        return self._sql is not None

    def _driver(self) -> Any:
        if self._conn is None:
            conn = self.store._engine.raw_connection()  # type: ignore[attr-defined]
            driver = getattr(conn, "driver_connection", None) or conn.connection
            if getattr(driver, "isolation_level", "") is not None:  # not autocommit: let the store do it
                conn.close()
                self._sql = None
                return None
            self._conn = conn
        return self._conn.driver_connection

    def put(self, key: str, value: Any) -> None:
        if self._sql is None or not self._primed:
            # the first put goes through the store, which creates its tables on first use
            self.store.kv_put(key, value)
            self._primed = True
            return
        driver = self._driver()
        if driver is None:
            self.store.kv_put(key, value)
            return
        text = to_json(value)
        try:
            driver.execute(self._sql, (key, text, self.store._ts(time.time())))  # type: ignore[attr-defined]
        except Exception as exc:  # sqlite3.OperationalError (locked past busy_timeout, disk full...)
            self.close()
            raise StoreError(f"sql store at {self.store.url}: checkpoint write failed: {exc}") from exc

    def close(self) -> None:
        """Return the connection to the store's pool (end of a run)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - best effort
                pass
