"""Redis store (redis-py): a LIST per session for messages, a HASH beside it for the summary and
bookkeeping, plain JSON strings for the KV facet.

Appends and loads are Lua scripts: one round trip, atomic against any number of writers, and the
session's TTL is refreshed on every use. Whole-session rewrites (trim, summary) use WATCH/MULTI.

Keys: ``<key_prefix><session>:messages`` (list), ``<key_prefix><session>:meta`` (hash),
``<kv_prefix><key>`` (string). ``key_prefix`` defaults to ``"session:"``, ``kv_prefix`` to
``"sibyl:kv:"``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import StoreError, StoreUnavailableError
from .base import SessionData, Store, check_messages, check_url, mask_url, scrub, to_json

__all__ = ["RedisStore", "DEFAULT_REDIS_URL"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# KEYS: list, meta.  ARGV: now, ttl_ms ("" = keep), user_id ("" = keep), messages...
_APPEND = """
local exists = redis.call('EXISTS', KEYS[2])
if exists == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'created_at', ARGV[1], 'summary', '', 'summary_covers', '0', 'metadata', '{}')
end
local n = redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
redis.call('HSET', KEYS[2], 'updated_at', ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], 'user_id', ARGV[3]) end
if ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[2], 'expires_at', tostring(tonumber(ARGV[1]) + tonumber(ARGV[2]) / 1000))
else
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
end
return n
"""

# KEYS: list, meta.  ARGV: now, ttl_ms ("" = no refresh), last ("" = all).
# Returns {meta flat list, the newest `last` messages, the list's length}.
_LOAD = """
local meta = redis.call('HGETALL', KEYS[2])
if #meta == 0 then return false end
if ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[2], 'expires_at', tostring(tonumber(ARGV[1]) + tonumber(ARGV[2]) / 1000))
  meta = redis.call('HGETALL', KEYS[2])
end
local n = redis.call('LLEN', KEYS[1])
local from = 0
if ARGV[3] ~= '' then from = math.max(0, n - tonumber(ARGV[3])) end
if ARGV[3] == '0' then return {meta, {}, n} end
return {meta, redis.call('LRANGE', KEYS[1], from, -1), n}
"""

# KEYS: list, meta.  ARGV: now, ttl_ms ("none" = never expire; <= 0 = expire now).
_EXPIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if ARGV[2] == 'none' then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('HDEL', KEYS[2], 'expires_at')
elseif tonumber(ARGV[2]) <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  redis.call('HSET', KEYS[2], 'expires_at', tostring(tonumber(ARGV[1]) + tonumber(ARGV[2]) / 1000))
end
return 1
"""


def _s(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


# The `# type: ignore ... # watched: runs at once` lines: after `pipe.watch(...)` a redis pipeline runs
# each command immediately and returns its reply, but types-redis types every pipeline call as queued
# (returning the pipeline), so the checker is wrong there.


class RedisStore(Store):
    """Sessions and KV in Redis; TTL refreshed on use; connection checked when opened."""

    backend = "redis"

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        key_prefix: str | None = "session:",
        kv_prefix: str | None = "sibyl:kv:",
        ttl: float | None = None,
        client: Any = None,
        socket_timeout: float = 5.0,
    ) -> None:
        super().__init__(ttl=ttl)
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a declared extra
            raise StoreError("storage: redis needs the redis package: pip install 'sibyl_nb[redis]'") from exc
        self._redis_mod = redis
        url = str(redis_url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL).strip()
        self.url = mask_url(url)
        if client is None:
            check_url(url, ("redis", "rediss", "unix"), "redis_url")
        self.key_prefix = "session:" if key_prefix is None else key_prefix
        self.kv_prefix = "sibyl:kv:" if kv_prefix is None else kv_prefix
        try:
            self._r = client or redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
            self._r.ping()
        except ValueError as exc:  # a URL redis-py cannot use (bad db number, query option...)
            raise StoreError(f"redis_url {self.url!r} is malformed ({scrub(str(exc), url)})") from None
        except redis.exceptions.AuthenticationError as exc:  # before ConnectionError: it is one
            raise StoreError(
                f"redis store at {self.url} refused the credentials ({scrub(str(exc), url)}); "
                "put the password in redis_url (redis://:password@host:6379/0)"
            ) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            # ``from None``: the driver's own exception may quote the URL, password included.
            raise StoreUnavailableError(
                f"redis store at {self.url} is unreachable ({scrub(str(exc), url)}). Start Redis there, "
                "set REDIS_URL or redis_url: to a running server, or use storage: diskcache (the embedded "
                "default)"
            ) from None
        self._append = self._r.register_script(_APPEND)
        self._load = self._r.register_script(_LOAD)
        self._expire = self._r.register_script(_EXPIRE)

    # ---------------------------------------------------------------- helpers
    def _keys(self, sid: str) -> tuple[str, str]:
        base = self.key_prefix + sid
        return base + ":messages", base + ":meta"

    def _ttl_ms(self, ttl: float | None) -> str:
        eff = ttl if ttl is not None else self.ttl
        return "" if eff is None else str(max(1, int(round(float(eff) * 1000))))

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (self._redis_mod.exceptions.ConnectionError, self._redis_mod.exceptions.TimeoutError) as exc:
            raise StoreUnavailableError(
                f"redis store at {self.url}: connection lost ({exc}); is the server up?"
            ) from exc

    @staticmethod
    def _to_data(sid: str, meta: Mapping[Any, Any], raw: Sequence[Any]) -> SessionData:
        m = {_s(k): _s(v) for k, v in meta.items()}
        return SessionData(
            session_id=sid,
            messages=[json.loads(x) for x in raw],
            summary=m.get("summary", ""),
            summary_covers=int(m.get("summary_covers") or 0),
            metadata=json.loads(m.get("metadata") or "{}"),
            user_id=m.get("user_id") or None,
            created_at=float(m.get("created_at") or 0),
            updated_at=float(m.get("updated_at") or 0),
            expires_at=float(m["expires_at"]) if m.get("expires_at") else None,
            first_seq=int(m.get("start") or 0),
        )

    # ---------------------------------------------------------------- message log
    def load(self, session_id: str, *, touch: bool = True, last: int | None = None) -> SessionData | None:
        lk, mk = self._keys(session_id)
        ttl = self._ttl_ms(None) if touch else ""
        want = "" if last is None else str(max(0, int(last)))
        out = self._call(self._load, keys=[lk, mk], args=[repr(time.time()), ttl, want])
        if not out:
            return None
        flat, raw, n = out
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        data = self._to_data(session_id, meta, raw)
        data.total = int(n)
        return data

    def trim(
        self, session_id: str, keep_last: int, *, fold: Callable[[str, list[Any]], str] | None = None
    ) -> list[Any]:
        """Drop all but the last ``keep_last`` messages: reads only the dropped ones (WATCH/MULTI)."""
        return self._call(self._trim_loop, session_id, max(0, int(keep_last)), fold)

    def _trim_loop(
        self, session_id: str, keep: int, fold: Callable[[str, list[Any]], str] | None
    ) -> list[Any]:
        lk, mk = self._keys(session_id)

        def body(pipe: Any) -> list[Any]:
            if not pipe.exists(mk):
                return []
            cut = int(pipe.llen(lk)) - keep  # watched: runs at once
            if cut <= 0:
                return []
            dropped = [json.loads(x) for x in pipe.lrange(lk, 0, cut - 1)]  # watched: runs at once
            fields: dict[str | bytes, str] = {"updated_at": repr(time.time())}
            if fold is not None:
                old = pipe.hmget(mk, "summary", "summary_covers")
                fields["summary"] = fold(_s(old[0] or ""), list(dropped))
                fields["summary_covers"] = str(int(_s(old[1] or "0")) + cut)
            pipe.multi()
            pipe.ltrim(lk, cut, -1)
            pipe.hincrby(mk, "start", cut)
            pipe.hset(mk, mapping=fields)
            ttl = self._ttl_ms(None)
            if ttl:
                pipe.pexpire(lk, int(ttl))
                pipe.pexpire(mk, int(ttl))
                pipe.hset(mk, "expires_at", repr(time.time() + int(ttl) / 1000))
            return dropped

        return self._watched(body, lk, mk)

    def _watched(self, body: Callable[[Any], Any], *keys: str) -> Any:
        """``body(pipe)`` as one optimistic transaction on ``keys`` (redis-py's WATCH / MULTI / EXEC loop:
        re-run from the start when another client changed them), returning what ``body`` returned."""
        return self._r.transaction(body, *keys, value_from_callable=True)

    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        encoded = [to_json(m) for m in check_messages(messages)]
        lk, mk = self._keys(session_id)
        if not encoded:
            return int(self._call(self._r.llen, lk))
        args = [repr(time.time()), self._ttl_ms(ttl), user_id or "", *encoded]
        return int(self._call(self._append, keys=[lk, mk], args=args))

    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        return self._call(self._rmw_loop, session_id, fn)

    def _rmw_loop(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        lk, mk = self._keys(session_id)

        def body(pipe: Any) -> SessionData | None:
            meta = pipe.hgetall(mk)
            cur = (
                self._to_data(session_id, meta, pipe.lrange(lk, 0, -1)) if meta else None
            )  # watched: runs at once
            new = fn(cur)
            pipe.multi()
            pipe.delete(lk, mk)
            if new is not None:
                if new.messages:
                    pipe.rpush(lk, *[to_json(m) for m in new.messages])
                fields: dict[str | bytes, str] = {
                    # numbers keep growing across rewrites (see SessionData.first_seq)
                    "start": str(cur.first_seq + len(cur.messages) if cur is not None else 0),
                    "summary": new.summary,
                    "summary_covers": str(new.summary_covers),
                    "metadata": to_json(new.metadata),
                    "created_at": repr(new.created_at),
                    "updated_at": repr(new.updated_at),
                }
                if new.user_id:
                    fields["user_id"] = new.user_id
                if new.expires_at is not None:
                    fields["expires_at"] = repr(new.expires_at)
                pipe.hset(mk, mapping=fields)
                if new.expires_at is not None:
                    at = int(new.expires_at * 1000)
                    pipe.pexpireat(lk, at)
                    pipe.pexpireat(mk, at)
            if new is not None:
                new.first_seq = cur.first_seq + len(cur.messages) if cur is not None else 0
                new.total = len(new.messages)
            return new

        result: SessionData | None = self._watched(body, lk, mk)
        return result

    def expire(self, session_id: str, ttl: float | None) -> bool:
        lk, mk = self._keys(session_id)
        arg = "none" if ttl is None else ("0" if ttl <= 0 else str(max(1, int(float(ttl) * 1000))))
        return bool(self._call(self._expire, keys=[lk, mk], args=[repr(time.time()), arg]))

    def delete(self, session_id: str) -> bool:
        lk, mk = self._keys(session_id)
        return bool(self._call(self._r.delete, lk, mk))

    def sessions(self) -> list[str]:
        pat = _glob_escape(self.key_prefix) + "*:meta"
        out = []
        for key in self._call(lambda: list(self._r.scan_iter(match=pat, count=1000, _type="hash"))):
            k = _s(key)
            out.append(k[len(self.key_prefix) : -len(":meta")])
        return sorted(out)

    # ---------------------------------------------------------------- key-value
    def kv_get(self, key: str, default: Any = None) -> Any:
        raw = self._call(self._r.get, self.kv_prefix + key)
        return default if raw is None else json.loads(raw)

    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        px = None if ttl is None else max(1, int(float(ttl) * 1000))
        self._call(self._r.set, self.kv_prefix + key, to_json(value), px=px)

    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        return self._call(self._kv_update_loop, key, fn, default, ttl)

    def _kv_update_loop(self, key: str, fn: Callable[[Any], Any], default: Any, ttl: float | None) -> Any:
        k = self.kv_prefix + key

        def body(pipe: Any) -> Any:
            raw = pipe.get(k)  # watched: runs at once
            new = fn(json.loads(to_json(default)) if raw is None else json.loads(raw))
            pipe.multi()
            if ttl is not None:
                pipe.set(k, to_json(new), px=max(1, int(float(ttl) * 1000)))
            else:
                pipe.set(k, to_json(new), keepttl=True)
            return new

        return self._watched(body, k)

    def kv_delete(self, key: str) -> bool:
        return bool(self._call(self._r.delete, self.kv_prefix + key))

    def kv_keys(self, prefix: str = "") -> list[str]:
        pat = _glob_escape(self.kv_prefix + prefix) + "*"
        n = len(self.kv_prefix)
        keys = self._call(lambda: list(self._r.scan_iter(match=pat, count=1000, _type="string")))
        return sorted(_s(k)[n:] for k in keys)

    def close(self) -> None:
        try:
            self._r.close()
        except Exception:  # pragma: no cover - closing is best effort
            pass


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a prefix matches literally."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)
