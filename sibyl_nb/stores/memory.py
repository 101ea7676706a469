"""In-process store: a dict behind a lock. For tests, notebooks and single-process runs.

Values are kept as JSON text, so what comes back is always a fresh copy and a non-JSON value fails
on write exactly as it would on the other backends.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import Message, SessionData, Store, check_messages, to_json

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Thread-safe, process-local; ``asyncio`` tasks and threads may append concurrently."""

    backend = "memory"

    def __init__(self, *, ttl: float | None = None, name: str = "default") -> None:
        super().__init__(ttl=ttl)
        self.url = f"memory://{name}"
        self._lock = threading.RLock()
        # session id -> (header dict, list of JSON-encoded messages)
        self._sessions: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._kv: dict[str, tuple[str, float | None]] = {}

    # ---------------------------------------------------------------- helpers
    def _live(self, session_id: str, now: float) -> tuple[dict[str, Any], list[str]] | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        exp = entry[0].get("expires_at")
        if exp is not None and exp <= now:
            del self._sessions[session_id]
            return None
        return entry

    @staticmethod
    def _to_data(
        session_id: str, head: dict[str, Any], raw: list[str], last: int | None = None
    ) -> SessionData:
        shown = raw if last is None else raw[max(0, len(raw) - max(0, int(last))) :]
        data = SessionData.from_dict(
            {**head, "session_id": session_id, "messages": [json.loads(m) for m in shown]}
        )
        data.total = len(raw)
        data.first_seq = int(head.get("start") or 0)
        return data

    # ---------------------------------------------------------------- message log
    def load(self, session_id: str, *, touch: bool = True, last: int | None = None) -> SessionData | None:
        with self._lock:
            now = time.time()
            entry = self._live(session_id, now)
            if entry is None:
                return None
            head, raw = entry
            if touch and self.ttl is not None:
                head["expires_at"] = now + self.ttl
            return self._to_data(session_id, head, raw, last)

    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        encoded = [to_json(m) for m in check_messages(messages)]
        with self._lock:
            now = time.time()
            entry = self._live(session_id, now)
            if entry is None:
                entry = (
                    {
                        "created_at": now,
                        "summary": "",
                        "summary_covers": 0,
                        "metadata": {},
                        "user_id": user_id,
                        "expires_at": None,
                    },
                    [],
                )
                self._sessions[session_id] = entry
            head, raw = entry
            raw.extend(encoded)
            head["updated_at"] = now
            if user_id is not None:
                head["user_id"] = user_id
            exp = self._expiry(now, ttl)
            if exp is not None:
                head["expires_at"] = exp
            return len(raw)

    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        with self._lock:
            entry = self._live(session_id, time.time())
            cur = self._to_data(session_id, *entry) if entry is not None else None
            new = fn(cur)
            if new is None:
                self._sessions.pop(session_id, None)
                return None
            d = new.to_dict()
            raw = [to_json(m) for m in d.pop("messages")]
            to_json(d)  # fail loudly on non-JSON metadata
            d.pop("session_id")
            # numbers keep growing across rewrites (see SessionData.first_seq)
            d["start"] = int(entry[0].get("start") or 0) + len(entry[1]) if entry is not None else 0
            self._sessions[session_id] = (json.loads(to_json(d)), raw)
            new.first_seq, new.total = d["start"], len(raw)
            return new

    def trim(
        self, session_id: str, keep_last: int, *, fold: Callable[[str, list[Message]], str] | None = None
    ) -> list[Message]:
        """Drop all but the last ``keep_last`` messages, decoding only the dropped ones."""
        with self._lock:
            now = time.time()
            entry = self._live(session_id, now)
            if entry is None:
                return []
            head, raw = entry
            cut = len(raw) - max(0, int(keep_last))
            if cut <= 0:
                return []
            dropped = [json.loads(m) for m in raw[:cut]]
            if fold is not None:
                head["summary"] = fold(head.get("summary") or "", list(dropped))
                head["summary_covers"] = int(head.get("summary_covers") or 0) + cut
            del raw[:cut]
            head["start"] = int(head.get("start") or 0) + cut
            head["updated_at"] = now
            exp = self._expiry(now, None)
            if exp is not None:
                head["expires_at"] = exp
            return dropped

    def delete(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def sessions(self) -> list[str]:
        with self._lock:
            now = time.time()
            return sorted(s for s in list(self._sessions) if self._live(s, now) is not None)

    def purge_expired(self) -> int:
        with self._lock:
            now = time.time()
            before = len(self._sessions)
            for s in list(self._sessions):
                self._live(s, now)
            for k in list(self._kv):
                self._kv_live(k, now)
            return before - len(self._sessions)

    # ---------------------------------------------------------------- key-value
    def _kv_live(self, key: str, now: float) -> tuple[str, float | None] | None:
        item = self._kv.get(key)
        if item is not None and item[1] is not None and item[1] <= now:
            del self._kv[key]
            return None
        return item

    def kv_get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            item = self._kv_live(key, time.time())
            return default if item is None else json.loads(item[0])

    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        text = to_json(value)
        with self._lock:
            self._kv[key] = (text, None if ttl is None else time.time() + float(ttl))

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        with self._lock:
            now = time.time()
            item = self._kv_live(key, now)
            cur = json.loads(item[0]) if item is not None else json.loads(to_json(default))
            new = fn(cur)
            exp = (now + float(ttl)) if ttl is not None else (item[1] if item is not None else None)
            self._kv[key] = (to_json(new), exp)
            return new

    def kv_delete(self, key: str) -> bool:
        with self._lock:
            return self._kv.pop(key, None) is not None

    def kv_keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            now = time.time()
            return sorted(
                k for k in list(self._kv) if k.startswith(prefix) and self._kv_live(k, now) is not None
            )
