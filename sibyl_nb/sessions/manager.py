"""Load a session's history for a run and store the turn after it: the seed's "how it works" 1-4.

Usable without a pipeline::

    mgr = SessionManager(policy_from_config({"subtechnique": "memory", "storage": "memory"}))
    view = mgr.load("user_123")            # view.history, view.summary
    mgr.record_turn("user_123", "What is Python?", "Python is a programming language...")
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..context.extractive import compress_text, summarize_messages
from ..context.tokens import TokenCounter, get_counter
from ..stores import SessionData, Store, shared_store
from .fold import left_out_summary
from .policy import SessionPolicy

__all__ = ["SessionManager", "SessionView", "make_message"]

log = logging.getLogger(__name__)

# (store url, session id) -> messages the last turn needed to fill its token budget (one past it).
# Only a hint for the next read's size: a wrong one costs one more read, never a wrong history.
_NEED: OrderedDict[tuple[str, str], int] = OrderedDict()
_NEED_MAX = 4096


def _remember(key: tuple[str, str], need: int) -> None:
    _NEED[key] = need
    _NEED.move_to_end(key)
    while len(_NEED) > _NEED_MAX:
        _NEED.popitem(last=False)


@dataclass(slots=True)
class SessionView:
    """What one run sees of a session."""

    session_id: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""
    new_session: bool = True
    stored_messages: int = 0
    summary_covers: int = 0
    compressed: int = 0  # older messages shown compressed
    left_out: int = 0  # stored messages not shown (max_tokens / max_messages / window)
    expires_at: float | None = None
    user_id: str | None = None


def make_message(role: str, content: str, counter: TokenCounter | None = None) -> dict[str, Any]:
    """A message as stored: role, content, time, and its token count (computed here, once)."""
    msg = {"role": role, "content": content, "ts": round(time.time(), 3)}
    (counter or get_counter()).message_tokens(msg)
    return msg


class SessionManager:
    """A session policy bound to a store (a shared one per configuration unless given)."""

    def __init__(
        self, policy: SessionPolicy, store: Store | None = None, *, counter: TokenCounter | None = None
    ) -> None:
        self.policy = policy
        self.counter = counter or get_counter()
        if store is None and policy.stateful:
            store = shared_store(policy.storage, ttl=policy.timeout, **policy.store_config)
        self.store = store

    @property
    def network(self) -> bool:
        """True when store calls leave the process (callers should run them in a thread)."""
        return self.store is not None and self.store.backend in ("redis", "sql")

    # ---------------------------------------------------------------- load (steps 1 and 3)
    def load(self, session_id: str | None) -> SessionView:
        pol = self.policy
        if not pol.stateful or self.store is None or not session_id:
            return SessionView(session_id)
        data = self._load_tail(session_id)
        if data is None:
            return SessionView(session_id)
        view = SessionView(
            session_id,
            new_session=False,
            stored_messages=data.message_count,
            summary=data.summary,
            summary_covers=data.summary_covers,
            expires_at=data.expires_at,
            user_id=data.user_id,
        )
        history = [m for m in data.messages if isinstance(m, dict)]
        left: list[dict[str, Any]] = []
        limit = pol.store_limit
        if limit and len(history) > limit:  # concurrent turns may overshoot until the next trim
            left, history = history[:-limit], history[-limit:]
        if pol.max_tokens:
            history, more, view.compressed = self._fit_tokens(history, pol.max_tokens)
            left += more
        view.left_out = len(left) + (data.message_count - len(data.messages))
        if view.left_out and pol.summarization and pol.max_tokens and not limit:
            # only a tail was read: the summary of the rest is folded forward (see .fold)
            view.summary = left_out_summary(
                self.store,
                data,
                len(history),
                length=pol.summary_length,
                counter=self.counter,
                ttl=pol.timeout,
                reload=lambda last: (
                    self.store.load(session_id, last=last, touch=False) if self.store is not None else None
                ),
            )
        elif left and pol.summarization:
            view.summary = summarize_messages(
                left, pol.summary_length, prior=view.summary, counter=self.counter
            )
        view.history = history
        return view

    PAGE = 64

    def _load_tail(self, session_id: str) -> SessionData | None:
        """The session with only as many of its newest messages as this turn can show.

        ``max_messages`` / ``window_size`` bound it directly. ``max_tokens`` reads the newest page
        sized from what the previous turn of this session needed (:data:`_NEED`; 64 the first time),
        and only when that page holds fewer tokens than the budget a larger one, so a turn is one
        read of about what fits, whatever the history's length. (``summarization`` folds what
        this leaves out into a stored summary: :mod:`.fold`. With ``max_messages`` too, the
        ``max_messages`` stored are read, and those that do not fit are summarised.)
        """
        pol = self.policy
        limit = pol.store_limit
        assert self.store is not None  # the caller returned early without a store
        if pol.max_tokens and (limit is None or not pol.summarization):
            key = (self.store.url, session_id)
            need = _NEED.get(key)
            page = self.PAGE if need is None else need + max(8, need // 8)
            page = page if limit is None else min(page, limit)
            tok = self.counter.message_tokens
            touch = True
            while True:
                data = self.store.load(session_id, last=page, touch=touch)
                if data is None:
                    return None
                touch = False  # refreshed by the first read
                used, fit = 0, 0
                for m in reversed(data.messages):  # the newest that fit, and the first that does not
                    used += tok(m) if isinstance(m, dict) else 0
                    fit += 1
                    if used > pol.max_tokens:
                        break
                done = len(data.messages) >= data.message_count or (limit is not None and page >= limit)
                if used > pol.max_tokens or done:
                    _remember(key, fit)
                    return data
                # the next page sized from what this one held per token, with a margin
                grow = max(2 * page, int(page * pol.max_tokens / max(used, 1) * 1.25) + 1)
                page = grow if limit is None else min(grow, limit)
        return self.store.load(session_id, last=limit)

    def _fit_tokens(
        self, history: list[dict[str, Any]], budget: int
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
        """(history within ``budget`` tokens, messages left out, how many were compressed)."""
        tok = self.counter.message_tokens
        if not self.policy.compression:  # the longest suffix within budget, counting only what it walks
            used, i = 0, len(history)
            while i > 0:
                t = tok(history[i - 1])
                if used + t > budget:
                    break
                used += t
                i -= 1
            return history[i:], history[:i], 0
        total = sum(tok(m) for m in history)
        if total <= budget:
            return history, [], 0
        history = list(history)
        compressed = 0
        if self.policy.compression:
            older = max(0, len(history) - self.policy.keep_recent)
            for i in range(older):  # oldest first, until it fits
                m = history[i]
                text, _ = compress_text(
                    str(m.get("content") or ""), self.policy.compression_ratio, self.counter
                )
                new = {
                    **{k: v for k, v in m.items() if k not in ("tokens", "tokens_of")},
                    "content": text,
                    "compressed": True,
                }
                total += tok(new) - tok(m)
                history[i] = new
                compressed += 1
                if total <= budget:
                    break
        cut = 0
        while total > budget and cut < len(history):
            total -= tok(history[cut])
            cut += 1
        kept = history[cut:]
        return kept, history[:cut], compressed - min(compressed, cut)

    # ---------------------------------------------------------------- store (steps 2 and 4)
    def record_turn(
        self, session_id: str | None, user: str | None, reply: str | None, *, user_id: str | None = None
    ) -> int:
        """Append the user message and the reply atomically, then enforce the stored bound."""
        pol = self.policy
        if not pol.stateful or self.store is None or not session_id:
            return 0
        msgs = []
        if user:
            msgs.append(make_message("user", user, self.counter))
        if reply:
            msgs.append(make_message("assistant", reply, self.counter))
        if not msgs:
            return 0
        n = self.store.append(session_id, msgs, user_id=user_id, ttl=pol.timeout)
        limit = pol.store_limit
        if limit and n > limit:
            fold: Callable[[str, list[dict[str, Any]]], str] | None = None
            if pol.summarization:

                def summarize(old: str, dropped: list[dict[str, Any]]) -> str:
                    return summarize_messages(dropped, pol.summary_length, prior=old, counter=self.counter)

                fold = summarize

            dropped = self.store.trim(session_id, limit, fold=fold)
            log.debug(
                "session %s: trimmed %d messages (%s)",
                session_id,
                len(dropped),
                "folded into the summary" if fold else "max_messages/window_size reached",
            )
            n -= len(dropped)
        return n
