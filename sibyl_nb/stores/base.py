"""The one store interface every backend implements, with two facets.

* A **message log** per session (conversation history): load, atomic append, an atomic
  read-modify-write (``update_session``) that replace / trim / summarise are built on, delete, expiry
  and listing. The summary lives *beside* the raw messages (``SessionData.summary``), never in their
  place.
* A small **JSON key-value** facet (``kv_*``) with an atomic update, so workflow state, checkpoints and
  the step cache reuse the same backends instead of growing their own.

Stores are synchronous: local backends answer in microseconds, and network backends are called from a
thread (``asyncio.to_thread``) by async callers. Values are JSON only (never pickle).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..errors import StoreError

__all__ = [
    "Message",
    "SessionData",
    "Store",
    "mask_url",
    "scrub",
    "check_url",
    "to_json",
    "check_messages",
]

Message = dict[str, Any]


@dataclass(slots=True)
class SessionData:
    """One session as stored: raw messages, the summary kept beside them, and bookkeeping.

    ``summary_covers`` counts the earlier messages the summary stands for (they were trimmed from
    the log on purpose); times are Unix seconds; ``expires_at`` is None for a session that never
    expires. ``total`` is how many messages the log holds: ``load(last=n)`` returns only the newest
    ``n`` of them in ``messages`` (None: ``messages`` is the whole log). ``first_seq`` is the store's
    number for the log's first message: numbers only grow (a trim moves the first one up, a rewrite
    starts after the last one), so ``first_seq + i`` names the log's ``i``-th message for as long as
    it is stored, and a number from before a rewrite never names a message after it.
    """

    session_id: str
    messages: list[Message] = field(default_factory=list)
    summary: str = ""
    summary_covers: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    total: int | None = None
    first_seq: int = 0

    @property
    def message_count(self) -> int:
        """Messages in the stored log (``messages`` may hold only the newest of them)."""
        return len(self.messages) if self.total is None else self.total

    def copy(self) -> SessionData:
        return replace(self, messages=list(self.messages), metadata=dict(self.metadata))

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "messages": self.messages,
            "summary": self.summary,
            "summary_covers": self.summary_covers,
            "metadata": self.metadata,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SessionData:
        return cls(
            session_id=str(d["session_id"]),
            messages=list(d.get("messages") or []),
            summary=str(d.get("summary") or ""),
            summary_covers=int(d.get("summary_covers") or 0),
            metadata=dict(d.get("metadata") or {}),
            user_id=d.get("user_id"),
            created_at=float(d.get("created_at") or 0.0),
            updated_at=float(d.get("updated_at") or 0.0),
            expires_at=None if d.get("expires_at") is None else float(d["expires_at"]),
        )

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (time.time() if now is None else now)


def to_json(value: Any) -> str:
    """Compact JSON, or a :class:`StoreError` saying which value is not JSON (we never pickle)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"store values must be JSON (dict, list, str, number, bool, None): {exc}") from None


def check_messages(messages: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[Message]:
    """Accept one message or a list; each must be a mapping (``{"role", "content", ...}``)."""
    if isinstance(messages, Mapping):
        messages = [messages]
    out = []
    for m in messages:
        if not isinstance(m, Mapping):
            raise StoreError(f"a message must be a dict like {{'role': 'user', 'content': '...'}}, got {m!r}")
        out.append(dict(m))
    return out


def _password_span(url: str) -> tuple[int, int] | None:
    """Where the password sits in ``scheme://user:password@host...`` (None if there is none).

    Parsed by hand rather than with ``urlsplit``: a password may hold ``@ / # ? [`` that make a
    URL parser split it elsewhere (and leak the rest) or raise.
    """
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    at = url.rfind("@", start)  # host names never hold "@", so the last one ends the credentials
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0:
        return None
    return colon + 1, at


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by ``***``: safe to put in an error message, a log or a repr."""
    if not url:
        return ""
    url = str(url)
    span = _password_span(url)
    if span is None or span[0] == span[1]:
        return url
    return url[: span[0]] + "***" + url[span[1] :]


def scrub(text: str, url: str | None) -> str:
    """``text`` (a driver's error message) with the URL's password masked wherever it appears."""
    if not url:
        return text
    span = _password_span(str(url))
    if span is None or span[0] == span[1]:
        return text
    from urllib.parse import quote, unquote

    secret = str(url)[span[0] : span[1]]
    for form in {secret, unquote(secret), quote(unquote(secret), safe="")}:
        if form:
            text = text.replace(form, "***")
    return text


def check_url(url: str, schemes: Sequence[str], what: str) -> str:
    """A clear :class:`StoreError` for a URL no driver could use (the password masked in it)."""
    shown = mask_url(url)
    scheme, sep, rest = str(url).partition("://")
    if not sep or not scheme:
        raise StoreError(f"{what} {shown!r} is not a URL: expected {schemes[0]}://host:port/...")
    base = scheme.split("+", 1)[0].lower()
    if base not in schemes:
        raise StoreError(f"{what} {shown!r}: unknown scheme {scheme!r} (use {', '.join(schemes)})")
    if base == "sqlite":
        return url
    span = _password_span(url)
    # The password replaced by a placeholder, so only the rest is parsed (it may hold anything).
    probe = url if span is None else url[: span[0]] + "x" + url[span[1] :]
    try:
        parts = urlsplit(probe)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise StoreError(f"{what} {shown!r} is malformed ({scrub(str(exc), url)})") from None
    db = parts.path.strip("/")
    if base in ("redis", "rediss") and db and not db.isdigit():
        raise StoreError(f"{what} {shown!r} is malformed (the path must be a database number, got {db!r})")
    if not parts.hostname and not parts.path.strip("/") and base != "redis":
        raise StoreError(f"{what} {shown!r} names no host")
    return url


class Store(ABC):
    """Base class: backends implement the abstract methods; the rest is derived from them.

    ``ttl`` is the store's default session timeout in seconds (None: sessions never expire). Every
    write, and every ``load(touch=True)``, moves a session's expiry to ``now + ttl`` ("refreshed on
    use"; a load may leave an expiry that is already within 1% of that, see :meth:`needs_touch`); a
    per-call ``ttl`` overrides the default.
    """

    backend: ClassVar[str] = "abstract"

    def __init__(self, *, ttl: float | None = None) -> None:
        self.ttl = None if ttl in (None, 0, "") else float(ttl)
        self.url = ""

    # ---------------------------------------------------------------- message log: primitives
    @abstractmethod
    def load(self, session_id: str, *, touch: bool = True, last: int | None = None) -> SessionData | None:
        """The session, or None if it does not exist or has expired (an expired one is removed).

        ``last=n`` reads only the newest ``n`` messages (``SessionData.total`` still counts them all):
        a turn reads what its context needs, at the same cost whatever the history's length.
        """

    @abstractmethod
    def append(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> int:
        """Append atomically (no lost or duplicated message under concurrent writers); returns the new length.

        Appending to an expired session starts a fresh one.
        """

    @abstractmethod
    def _rmw(
        self, session_id: str, fn: Callable[[SessionData | None], SessionData | None]
    ) -> SessionData | None:
        """Atomic read-modify-write: write ``fn(current)`` exactly as returned (None deletes)."""

    @abstractmethod
    def delete(self, session_id: str) -> bool:
        """Remove a session; True if it existed."""

    @abstractmethod
    def sessions(self) -> list[str]:
        """Ids of the live (not expired) sessions, sorted."""

    # ---------------------------------------------------------------- message log: derived
    TOUCH_SLACK = 0.01  # of the TTL (at most TOUCH_SLACK_MAX seconds): how stale a load's refresh may be
    TOUCH_SLACK_MAX = 60.0

    def needs_touch(self, expires_at: float | None, now: float) -> bool:
        """Whether a load must write a refreshed expiry (``now + ttl``): not when the stored one is
        within 1% of the TTL (at most a minute) of it, so the loads of a conversation in progress,
        whose appends refresh it anyway, read without writing."""
        if self.ttl is None:
            return False
        if expires_at is None:
            return True
        return now + self.ttl - expires_at > min(self.ttl * self.TOUCH_SLACK, self.TOUCH_SLACK_MAX)

    def _expiry(self, now: float, ttl: float | None) -> float | None:
        eff = ttl if ttl is not None else self.ttl
        return None if eff is None else now + float(eff)

    def update_session(
        self,
        session_id: str,
        fn: Callable[[SessionData | None], SessionData | None],
        *,
        ttl: float | None = None,
    ) -> SessionData | None:
        """Atomically replace the session by ``fn(current)`` (``current`` is None when absent/expired).

        ``fn`` may mutate and return its argument; returning None deletes the session. Timestamps and
        expiry are set here. ``fn`` may run more than once (optimistic backends retry on a conflicting
        write), so it must not have side effects beyond its return value.
        """

        def step(cur: SessionData | None) -> SessionData | None:
            new = fn(cur.copy() if cur is not None else None)
            if new is None:
                return None
            now = time.time()
            new.session_id = session_id
            new.messages = check_messages(new.messages)
            new.created_at = new.created_at or now
            new.updated_at = now
            exp = self._expiry(now, ttl)
            if exp is not None:
                new.expires_at = exp
            return new

        return self._rmw(session_id, step)

    def replace(
        self,
        session_id: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        summary: str | None = None,
        summary_covers: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        user_id: str | None = None,
        ttl: float | None = None,
    ) -> SessionData:
        """Replace the whole message log (an explicit, visible operation; summary kept unless given)."""

        def fn(cur: SessionData | None) -> SessionData:
            data = cur or SessionData(session_id)
            data.messages = check_messages(messages)
            if summary is not None:
                data.summary = summary
            if summary_covers is not None:
                data.summary_covers = summary_covers
            if metadata is not None:
                data.metadata = dict(metadata)
            if user_id is not None:
                data.user_id = user_id
            return data

        out = self.update_session(session_id, fn, ttl=ttl)
        assert out is not None
        return out

    def set_summary(self, session_id: str, summary: str, *, covers: int | None = None) -> SessionData | None:
        """Store ``summary`` beside the raw messages (they stay as they are). None if no such session."""

        def fn(cur: SessionData | None) -> SessionData | None:
            if cur is None:
                return None
            cur.summary = summary
            if covers is not None:
                cur.summary_covers = covers
            return cur

        return self.update_session(session_id, fn)

    def trim(
        self, session_id: str, keep_last: int, *, fold: Callable[[str, list[Message]], str] | None = None
    ) -> list[Message]:
        """Drop all but the last ``keep_last`` messages, atomically; returns the dropped ones.

        With ``fold(old_summary, dropped) -> new_summary`` the dropped messages are folded into the
        stored summary in the same atomic step, so nothing disappears silently.
        """
        dropped: list[Message] = []

        def fn(cur: SessionData | None) -> SessionData | None:
            dropped.clear()
            if cur is None:
                return None
            cut = max(0, len(cur.messages) - max(0, int(keep_last)))
            if cut:
                dropped.extend(cur.messages[:cut])
                cur.messages = cur.messages[cut:]
                if fold is not None:
                    cur.summary = fold(cur.summary, list(dropped))
                    cur.summary_covers += cut
            return cur

        self.update_session(session_id, fn)
        return dropped

    def expire(self, session_id: str, ttl: float | None) -> bool:
        """Set a session's timeout to ``ttl`` seconds from now (None: never; <= 0: expire now)."""

        def fn(cur: SessionData | None) -> SessionData | None:
            if cur is None:
                return None
            cur.expires_at = None if ttl is None else time.time() + float(ttl)
            return cur

        return self._rmw(session_id, fn) is not None

    def purge_expired(self) -> int:
        """Remove expired sessions (and KV entries) now instead of lazily; returns how many sessions."""
        return 0

    # ---------------------------------------------------------------- key-value facet
    @abstractmethod
    def kv_get(self, key: str, default: Any = None) -> Any:
        """The JSON value under ``key``, or ``default`` if absent or expired."""

    @abstractmethod
    def kv_put(self, key: str, value: Any, *, ttl: float | None = None) -> None:
        """Store a JSON value; ``ttl`` seconds until it expires (None: never)."""

    @abstractmethod
    def kv_update(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        """Atomically store ``fn(current or default)`` and return it; ``ttl`` None keeps the key's expiry.

        ``fn`` may run more than once (retried on a conflicting write): keep it free of side effects.
        """

    @abstractmethod
    def kv_delete(self, key: str) -> bool:
        """Remove a key; True if it existed."""

    @abstractmethod
    def kv_keys(self, prefix: str = "") -> list[str]:
        """Live keys starting with ``prefix``, sorted."""

    def kv_merge(self, key: str, patch: Mapping[str, Any], *, ttl: float | None = None) -> dict[str, Any]:
        """Atomically shallow-merge ``patch`` into the dict under ``key`` (created if absent)."""

        def fn(cur: Any) -> dict[str, Any]:
            if cur is None:
                cur = {}
            if not isinstance(cur, dict):
                raise StoreError(f"kv_merge: the value under {key!r} is a {type(cur).__name__}, not a dict")
            cur.update(patch)
            return cur

        return self.kv_update(key, fn, ttl=ttl)

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and file handles."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.url}" if self.url else ""
        return f"<{type(self).__name__}{where} ttl={self.ttl}>"
