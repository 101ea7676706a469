"""The embedded default store: diskcache (SQLite + files) under ``sibyl_home("sessions")``.

Values are JSON through :class:`JSONOnlyDisk`; diskcache's default Disk pickles, and unpickling a
tampered cache file runs code (CVE-2025-69872), so this Disk refuses pickled rows outright.

Layout inside one cache (keys sort so headers come first, then KV entries, then messages):
``h:<session>`` header (counters, summary, metadata, expiry), ``k:<key>`` KV values (diskcache's own
expiry), ``m:<session>:<seq>`` one message each, so an append writes O(1) rows whatever the length,
and a load reads its newest messages with one range query over those keys (:meth:`DiskStore._range`).
Each operation is one diskcache transaction (``BEGIN IMMEDIATE``), which makes appends from threads
and processes atomic.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, UNKNOWN

from ..errors import StoreError
from ..paths import sibyl_home
from .base import Message, SessionData, Store, check_messages, to_json

__all__ = ["DiskStore", "JSONOnlyDisk"]

_MISSING = object()
log = logging.getLogger(__name__)
# The only file names diskcache itself writes (``Disk.filename``): two hex levels, then 28 hex + .val.
_OWN_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")


def _own_file(filename: Any) -> bool:
    """True for a value file diskcache could have written here; False for ``/etc/passwd``, ``../x``."""
    return isinstance(filename, str) and _OWN_FILE.fullmatch(filename) is not None


class JSONOnlyDisk(diskcache.Disk):
    """A diskcache Disk that stores keys as plain strings and values as JSON text; never pickles."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if not isinstance(key, str):
            raise StoreError(f"diskcache store keys must be strings, got {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise StoreError("refusing to unpickle a diskcache key (only JSON stores are supported)")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[Any, ...]:
        if read:
            raise StoreError("file-like values are not supported by the JSON diskcache store")
        return super().store(to_json(value), False, key=key)

    def remove(self, file_path: str) -> None:
        # A tampered row's filename must not make a delete remove a file elsewhere on the machine.
        if not _own_file(file_path):
            log.warning(
                "diskcache store: not removing %r, which is not one of the cache's own files", file_path
            )
            return
        super().remove(file_path)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise StoreError(
                "refusing to unpickle a diskcache value (CVE-2025-69872); "
                "this cache was written by another program"
            )
        if filename is not None and not _own_file(filename):
            raise StoreError(
                f"refusing a diskcache row that points at the file {filename!r} (outside the cache's own "
                "value files); this cache was written by another program"
            )
        data = super().fetch(mode, filename, value, read)
        if isinstance(data, bytes):
            data = data.decode("utf-8")
        return json.loads(data)


_RANGE = (
    "SELECT key, mode, filename, value FROM Cache WHERE key >= ? AND key < ? AND raw = 1"
    " AND (expire_time IS NULL OR expire_time > ?) ORDER BY key"
)


def _hkey(sid: str) -> str:
    return "h:" + sid


def _mkey(sid: str, seq: int) -> str:
    return f"m:{sid}:{seq:012d}"


class DiskStore(Store):
    """Sessions and KV in a diskcache directory; safe across threads and processes."""

    backend = "diskcache"

    def __init__(
        self, directory: str | Path | None = None, *, ttl: float | None = None, timeout: float = 60.0
    ) -> None:
        super().__init__(ttl=ttl)
        path = Path(directory) if directory else sibyl_home("sessions")
        try:
            path.mkdir(parents=True, exist_ok=True)
            # eviction_policy "none": a session store must never cull data to stay under a size limit.
            self._cache = diskcache.Cache(
                str(path),
                disk=JSONOnlyDisk,
                timeout=timeout,
                eviction_policy="none",
                size_limit=2**62,
                cull_limit=0,
            )
        except (OSError, diskcache.Timeout) as exc:
            raise StoreError(
                f"diskcache store at {path} cannot be opened: {exc}. Check the folder is "
                "writable, or set SIBYL_HOME / pass directory="
            ) from exc
        self.directory = path
        self.url = f"diskcache://{path}"

    # ---------------------------------------------------------------- helpers (inside a transaction)
    def _header(self, sid: str, now: float) -> dict[str, Any] | None:
        head = self._cache.get(_hkey(sid))
        if head is None:
            return None
        if head.get("expires_at") is not None and head["expires_at"] <= now:
            self._drop(sid, head)
            return None
        return head

    def _drop(self, sid: str, head: dict[str, Any]) -> None:
        cache = self._cache
        for seq in range(head["start"], head["end"]):
            cache.delete(_mkey(sid, seq))
        cache.delete(_hkey(sid))

    def _range(self, sid: str, lo: int, hi: int) -> list[Message]:
        """Messages ``lo`` .. ``hi`` (exclusive) in one indexed range query, not one query per message.

        diskcache has no multi-get, so this reads its ``Cache`` table (key, raw, expiry, mode,
        filename, value: its documented layout since 1.0) and decodes each row through this
        store's own :class:`JSONOnlyDisk`, which refuses pickled and foreign-file rows as ``get`` does.
        """
        if hi <= lo:
            return []
        cache = self._cache
        first, stop = _mkey(sid, lo), _mkey(sid, hi)
        rows = cache._sql(_RANGE, (first, stop, time.time())).fetchall()
        disk, size = cache.disk, len(first)
        out = []
        for key, mode, filename, value in rows:
            if (
                len(key) != size
            ):  # another session's key sorting in between ("m:a:0...1:..." for id "a:0...1")
                continue
            try:
                out.append(disk.fetch(mode, filename, value, False))
            except OSError:  # a value file removed by a concurrent trim
                continue
        return out

    def _read(self, sid: str, head: dict[str, Any], last: int | None = None) -> SessionData:
        lo = head["start"] if last is None else max(head["start"], head["end"] - max(0, int(last)))
        msgs = self._range(sid, lo, head["end"])
        data = SessionData.from_dict({**head, "session_id": sid, "messages": msgs})
        data.total = head["end"] - head["start"]
        data.first_seq = head["start"]
        return data

    # ---------------------------------------------------------------- message log
    def load(self, session_id: str, *, touch: bool = True, last: int | None = None) -> SessionData | None:
        with self._cache.transact(retry=True):
            now = time.time()
            head = self._header(session_id, now)
            if head is None:
                return None
            if touch and self.needs_touch(head.get("expires_at"), now):
                assert self.ttl is not None
                head["expires_at"] = now + self.ttl
                self._cache.set(_hkey(session_id), head)
            return self._read(session_id, head, last)

    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        msgs = check_messages(messages)
        for m in msgs:
            to_json(m)
        cache = self._cache
        with cache.transact(retry=True):
            now = time.time()
            head = self._header(session_id, now)
            if head is None:
                head = {
                    "start": 0,
                    "end": 0,
                    "summary": "",
                    "summary_covers": 0,
                    "metadata": {},
                    "user_id": user_id,
                    "created_at": now,
                    "expires_at": None,
                }
            for m in msgs:
                cache.set(_mkey(session_id, head["end"]), m)
                head["end"] += 1
            head["updated_at"] = now
            if user_id is not None:
                head["user_id"] = user_id
            exp = self._expiry(now, ttl)
            if exp is not None:
                head["expires_at"] = exp
            cache.set(_hkey(session_id), head)
            return head["end"] - head["start"]

    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        cache = self._cache
        with cache.transact(retry=True):
            head = self._header(session_id, time.time())
            cur = self._read(session_id, head) if head is not None else None
            new = fn(cur)
            if head is not None:
                self._drop(session_id, head)
            if new is None:
                return None
            d = new.to_dict()
            msgs = d.pop("messages")
            d.pop("session_id")
            # Sequence numbers keep growing across rewrites, so a reader never mixes generations.
            start = head["end"] if head is not None else 0
            for i, m in enumerate(msgs):
                cache.set(_mkey(session_id, start + i), m)
            d.update(start=start, end=start + len(msgs))
            cache.set(_hkey(session_id), d)
            new.first_seq, new.total = start, len(msgs)
            return new

    def trim(
        self, session_id: str, keep_last: int, *, fold: Callable[[str, list[Message]], str] | None = None
    ) -> list[Message]:
        """Drop all but the last ``keep_last`` messages: touches only the dropped rows and the header."""
        cache = self._cache
        with cache.transact(retry=True):
            now = time.time()
            head = self._header(session_id, now)
            if head is None:
                return []
            cut = head["end"] - head["start"] - max(0, int(keep_last))
            if cut <= 0:
                return []
            dropped = self._range(session_id, head["start"], head["start"] + cut)
            for seq in range(head["start"], head["start"] + cut):
                cache.delete(_mkey(session_id, seq))
            head["start"] += cut
            if fold is not None:
                head["summary"] = fold(head.get("summary") or "", list(dropped))
                head["summary_covers"] = int(head.get("summary_covers") or 0) + cut
            head["updated_at"] = now
            exp = self._expiry(now, None)
            if exp is not None:
                head["expires_at"] = exp
            cache.set(_hkey(session_id), head)
            return dropped

    def delete(self, session_id: str) -> bool:
        with self._cache.transact(retry=True):
            head = self._cache.get(_hkey(session_id))
            if head is None:
                return False
            self._drop(session_id, head)
            return not (head.get("expires_at") is not None and head["expires_at"] <= time.time())

    def _session_keys(self) -> list[str]:
        out = []
        for key in self._cache.iterkeys():
            if not key.startswith("h:"):
                break  # headers sort first
            out.append(key[2:])
        return out

    def sessions(self) -> list[str]:
        now = time.time()
        live = []
        for sid in self._session_keys():
            head = self._cache.get(_hkey(sid))
            if head is not None and not (head.get("expires_at") is not None and head["expires_at"] <= now):
                live.append(sid)
        return sorted(live)

    def purge_expired(self) -> int:
        n = 0
        for sid in self._session_keys():
            with self._cache.transact(retry=True):
                head = self._cache.get(_hkey(sid))
                if (
                    head is not None
                    and head.get("expires_at") is not None
                    and head["expires_at"] <= time.time()
                ):
                    self._drop(sid, head)
                    n += 1
        self._cache.expire()
        return n

    # ---------------------------------------------------------------- key-value
    def kv_get(self, key: str, default: Any = None) -> Any:
        value = self._cache.get("k:" + key, default=_MISSING)
        return default if value is _MISSING else value

    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        self._cache.set("k:" + key, value, expire=ttl, retry=True)

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        k = "k:" + key
        cache = self._cache
        with cache.transact(retry=True):
            value, expire_time = cache.get(k, default=_MISSING, expire_time=True)
            now = time.time()
            cur = json.loads(to_json(default)) if value is _MISSING else value
            new = fn(cur)
            if ttl is not None:
                expire = float(ttl)
            elif value is not _MISSING and expire_time is not None:
                expire = max(expire_time - now, 1e-3)
            else:
                expire = None
            cache.set(k, new, expire=expire)
            return new

    def kv_delete(self, key: str) -> bool:
        return bool(self._cache.delete("k:" + key, retry=True))

    def kv_keys(self, prefix: str = "") -> list[str]:
        want = "k:" + prefix
        out = []
        for key in self._cache.iterkeys():
            if key < want:
                continue
            if not key.startswith(want):
                break
            if self._cache.get(key, default=_MISSING) is not _MISSING:
                out.append(key[2:])
        return out

    def close(self) -> None:
        self._cache.close()
