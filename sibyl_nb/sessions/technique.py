"""``workflow_orchestration.session_management``: load the conversation before the run, store the
turn after it.

Contract with the engine: the step sets ``ctx.session["session_id"]``,
``ctx.session["conversation_history"]`` (prior messages, ``{"role", "content", "tokens", "tokens_of", "ts"}``)
and ``ctx.session["conversation_summary"]`` ("" if none), returns a JSON dict, and registers
``ctx.defer(callback)``; after the run succeeds the engine calls ``callback(result)``, which appends
the user's message and ``result.text`` (the final answer) to the store. A failed run stores nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..context.strategies import SUMMARY_PREFIX
from ..document.schema import NUMBER, ConfigSchema, Field
from ..stores.factory import STORAGE_NAMES
from ..techniques.context import query_of
from ..techniques.registry import register_technique
from .manager import SessionManager, SessionView
from .policy import MODES, STORE_KEYS, policy_from_config

__all__ = ["session_management", "CONFIG_SCHEMA", "reply_text", "summary_message"]

_STORE_KEYS = ("storage",) + STORE_KEYS
_IDS = ("session_id", "user_id")
_COUNT = 1_000_000_000
CONFIG_SCHEMA = ConfigSchema(
    {
        "storage": Field(tuple(sorted(STORAGE_NAMES)), "where sessions live (default per mode)"),
        "session_id": Field(
            (str, int), "the session to load (default: the input's session_id, else a new one)"
        ),
        "user_id": Field((str, int), "who the session belongs to"),
        "timeout": Field(NUMBER, "seconds of inactivity before a session expires (0: never)", minimum=0),
        "max_messages": Field(int, "messages kept in the store", minimum=1, maximum=_COUNT),
        "max_tokens": Field(int, "tokens of history handed to the pipeline", minimum=1, maximum=_COUNT),
        "compression": Field(bool, "compress older messages before leaving any out"),
        "summarization": Field(bool, "fold trimmed messages into the stored summary"),
        "compression_ratio": Field(
            NUMBER, "target size of compressed messages", default=0.5, exclusive_minimum=0, maximum=1
        ),
        "keep_recent": Field(int, "newest messages never compressed", default=4, minimum=1, maximum=_COUNT),
        "summary_length": Field(int, "summary length, in tokens", default=200, minimum=1, maximum=_COUNT),
        "window_size": Field(int, "messages kept (stored and shown)", default=10, minimum=1, maximum=_COUNT),
        "include_summary": Field(bool, "fold older messages into the summary"),
        "redis_url": Field(str, "Redis URL (storage: redis)", access="url"),
        "key_prefix": Field(str, "Redis key prefix"),
        "kv_prefix": Field(str, "Redis key prefix of the key-value side"),
        "database_url": Field(str, "SQLAlchemy URL (storage: database)", access="url"),
        "table": Field(str, "SQL table of messages"),
        "kv_table": Field(str, "SQL table of the key-value side"),
        "directory": Field(str, "diskcache directory (storage: diskcache)", access="store"),
    },
    subtechniques={
        "memory": _IDS
        + _STORE_KEYS
        + (
            "timeout",
            "max_messages",
            "max_tokens",
            "compression",
            "summarization",
            "compression_ratio",
            "keep_recent",
            "summary_length",
        ),
        "stateless": _IDS,
        "persistent": _IDS + _STORE_KEYS + ("timeout", "max_messages", "summarization", "summary_length"),
        "sliding_window": _IDS
        + _STORE_KEYS
        + ("timeout", "window_size", "include_summary", "summary_length"),
    },
    default_subtechnique="memory",
    description="load the conversation before the run, store the turn after it",
)
OUTPUTS = (
    "session_id",
    "mode",
    "history_length",
    "summary",
    "new_session",
    "stored_messages",
    "storage",
    "user_id",
    "timeout",
    "compressed",
    "left_out",
    "summary_covers",
)


def summary_message(summary: str) -> dict[str, str]:
    """The stored summary as the system message a model reads it in (same form as the context step's)."""
    return {"role": "system", "content": SUMMARY_PREFIX + summary}


def reply_text(result: Any) -> str | None:
    """The run's final answer text: ``result.text``, else a text-like field of ``result.output``."""
    text = getattr(result, "text", None)
    if isinstance(text, str) and text:
        return text
    out = getattr(result, "output", result)
    if isinstance(out, str):
        return out or None
    if isinstance(out, Mapping):
        for key in ("text", "answer", "response", "content", "output"):
            v = out.get(key)
            if isinstance(v, str) and v:
                return v
    return None


def _input_field(ctx: Any, key: str) -> Any:
    return ctx.input.get(key) if isinstance(ctx.input, Mapping) else None


async def _call(mgr: SessionManager, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if mgr.network:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return fn(*args, **kwargs)


async def session_management(ctx: Any) -> dict[str, Any]:
    """Load (or start) the session named by ``session_id`` and arrange for this turn to be stored."""
    cfg = ctx.config
    policy = policy_from_config(cfg)
    sid = cfg.get("session_id") or _input_field(ctx, "session_id")
    sid = None if sid in (None, "") else str(sid)
    user_id = cfg.get("user_id") or _input_field(ctx, "user_id")
    user_id = None if user_id in (None, "") else str(user_id)
    if sid is None and policy.stateful:
        sid = uuid.uuid4().hex  # a fresh session; the output tells the caller its id
    # One manager per call (cheap); the store behind it is shared per configuration.
    mgr = SessionManager(policy) if policy.stateful else None
    view = await _call(mgr, mgr.load, sid) if mgr is not None else SessionView(sid)

    ctx.session["session_id"] = sid
    ctx.session["conversation_history"] = view.history
    ctx.session["conversation_summary"] = view.summary
    # where the loaded history starts in the whole conversation (messages folded into the summary and
    # stored messages not loaded come before it): the summary strategy aligns its blocks to it
    ctx.session["history_offset"] = view.summary_covers + view.stored_messages - len(view.history)
    if policy.summarization and view.summary:
        # ``include_summary`` / ``summarization``: the summary stands in for the messages it replaced,
        # so it is sent with the history even when no context step runs (a context step rebuilds
        # ``context_messages`` from the same summary and history).
        ctx.session["context_messages"] = [summary_message(view.summary)] + [
            {"role": m.get("role", "user"), "content": m.get("content")} for m in view.history
        ]

    if mgr is not None:
        user_message = ctx.query or query_of(ctx.input)  # captured now: later steps may rewrite ctx.query

        async def store_turn(result: Any) -> None:
            await _call(mgr, mgr.record_turn, sid, user_message, reply_text(result), user_id=user_id)

        ctx.defer(store_turn)

    return {
        "session_id": sid,
        "mode": policy.mode,
        "history_length": len(view.history),
        "summary": view.summary,
        "new_session": view.new_session,
        "stored_messages": view.stored_messages,
        "storage": mgr.store.backend if mgr is not None and mgr.store is not None else None,
        "user_id": user_id or view.user_id,
        "timeout": policy.timeout,
        "compressed": view.compressed,
        "left_out": view.left_out,
        "summary_covers": view.summary_covers,
    }


register_technique(
    "workflow_orchestration.session_management",
    session_management,
    blocking=False,
    subtechniques=MODES,
    config_schema=CONFIG_SCHEMA,
    outputs=OUTPUTS,
)
