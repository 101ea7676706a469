"""A hot-path ``put`` for per-step checkpoint writes.

A checkpoint written after every step cannot afford a full store round of pool checkout and
statement compilation on SQLite, so a store that offers a fast writer (``fast_kv_put()``, today
the SQL store on SQLite) is asked for one; every other store is written with ``kv_put``. Either
way the rows are the store's own, so ``kv_get``, ``kv_keys`` and pruning read them back unchanged.
"""

from __future__ import annotations

from typing import Any

from ..stores.base import Store

__all__ = ["KVWriter"]


class KVWriter:
    """``put(key, value)`` with the semantics of ``store.kv_put(key, value)`` (no ttl)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._fast: Any = None
        self._asked = False

    @property
    def fast(self) -> bool:
        """True when this store offers a fast writer (it is opened on the first put)."""
        return (
            callable(getattr(self.store, "fast_kv_put", None))
            and getattr(self.store, "dialect", "") == "sqlite"
        )

    def put(self, key: str, value: Any) -> None:
        if not self._asked:
            self._asked = True
            make = getattr(self.store, "fast_kv_put", None)
            self._fast = make() if callable(make) else None
        if self._fast is None:
            self.store.kv_put(key, value)
        else:
            self._fast.put(key, value)

    def close(self) -> None:
        """Return the writer's connection to the store's pool (end of a run)."""
        fast, self._fast = self._fast, None
        self._asked = False
        if fast is not None:
            fast.close()
