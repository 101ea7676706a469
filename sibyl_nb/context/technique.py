"""``workflow_orchestration.context_management``: fit the conversation into the model's window.

Reads ``ctx.session["conversation_history"]`` (set by the session step), the stored
``conversation_summary``, the current query (``ctx.query``) and ``system_prompt`` (accounted, not
sent). Sets ``ctx.session["context_messages"]`` — the prior-turn messages to send, summary and
compressed messages included, without the system prompt and current message, which the generation
step adds — and ``ctx.session["token_allocation"]``; emits a ``token_allocation`` event for the
notebook widget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ..document.schema import NUMBER, ConfigSchema, Field, Rule
from ..techniques.registry import register_technique
from .strategies import STRATEGIES, build_context
from .tokens import content_text, get_counter

__all__ = ["context_management", "CONFIG_SCHEMA"]

_METHODS = ("extractive", "abstractive")
_SHARED = ("max_tokens", "reserve_tokens", "system_prompt", "model", "history", "current")
_LEVEL = ConfigSchema(
    {
        "name": Field(
            ("full", "recent", "compressed", "compress", "summary", "summarized", "summarised"),
            "which level this entry sizes",
        ),
        "messages": Field(int, "messages at this level", minimum=0, maximum=1_000_000),
        "ratio": Field(NUMBER, "compression ratio of the compressed level", exclusive_minimum=0, maximum=1),
        "max_tokens": Field(int, "summary length of the summary level", minimum=1, maximum=1_000_000),
    },
    description="one hierarchical level",
    required=("name",),
)
_LEVEL_COUNTS = ConfigSchema(
    {
        name: Field(int, f"messages at the {name} level", minimum=0, maximum=1_000_000)
        for name in ("full", "recent", "compressed", "compress", "summary", "summarized", "summarised")
    },
    description="messages per hierarchical level",
)
CONFIG_SCHEMA = ConfigSchema(
    {
        "max_tokens": Field(
            int, "the model's context window, in tokens", default=8000, minimum=1, maximum=10_000_000
        ),
        "reserve_tokens": Field(
            int, "tokens kept free for the response", minimum=0, maximum=10_000_000, default=0
        ),
        "window_size": Field(int, "at most this many recent messages", minimum=1, maximum=1_000_000),
        "system_prompt": Field(str, "system prompt, counted against the budget"),
        "compression_ratio": Field(
            NUMBER, "target size of compressed messages", default=0.5, exclusive_minimum=0, maximum=1
        ),
        "compression_method": Field(_METHODS, "extractive (model-free) or abstractive (asks the provider)"),
        "keep_recent": Field(int, "newest messages never compressed", minimum=0, maximum=1_000_000),
        "summary_frequency": Field(
            int, "messages per summarised block", default=10, minimum=1, maximum=1_000_000
        ),
        "summary_length": Field(int, "summary length, in tokens", default=200, minimum=1, maximum=1_000_000),
        "levels": Field(
            (list, dict),
            "hierarchical levels: [{name, messages}] or {full: n, compressed: n, summary: n}",
            items=_LEVEL,
            values=_LEVEL_COUNTS,
            max_items=3,
            unique_key="name",
        ),
        "include_summary": Field(bool, "prepend the stored conversation summary"),
        "summary_method": Field(_METHODS, "extractive (model-free) or abstractive (asks the provider)"),
        "model": Field(str, "model whose tokenizer counts tokens"),
        "provider": Field(str, "provider for abstractive compression/summaries"),
        "history": Field((list, str), "the messages to fit (default: the session's history)"),
        "current": Field(str, "the current message (default: the query)"),
    },
    subtechniques={
        "window": _SHARED + ("window_size", "include_summary"),
        "compression": _SHARED
        + ("compression_ratio", "compression_method", "keep_recent", "include_summary", "provider"),
        "summary": _SHARED + ("summary_frequency", "summary_length", "summary_method", "provider"),
        "hierarchical": _SHARED + ("levels", "compression_ratio", "summary_length"),
    },
    default_subtechnique="window",
    rules=(Rule("reserve_tokens", "<", "max_tokens"),),
    description="fit the conversation into the model's context window",
)
OUTPUTS = (
    "messages",
    "allocation",
    "strategy",
    "kept",
    "tokens_used",
    "max_tokens",
    "dropped",
    "summary",
    "over_budget",
    "history_length",
)

_ABSTRACT_PROMPT = (
    "Compress the conversation below into at most about {n} tokens. Keep names, facts, "
    "decisions and open questions; write plain prose, no preamble."
)
# compression_method / summary_method "abstractive" ask the provider; "extractive" (default) is model-free.


def _from_session(ctx: Any) -> bool:
    """True when the history is the session's (not a ``history:`` given in the config)."""
    hist = ctx.config.get("history")
    return hist is None or isinstance(hist, str)


def _history(ctx: Any) -> list[dict[str, Any]]:
    hist = ctx.config.get("history")
    if hist is None or isinstance(hist, str):
        hist = ctx.session.get("conversation_history") or []
    if not isinstance(hist, Sequence):
        return []
    return [m if isinstance(m, dict) else dict(m) for m in hist if isinstance(m, Mapping)]


def _transcript(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in messages)


async def context_management(ctx: Any) -> dict[str, Any]:
    """Build the context with the configured strategy and report where every token goes."""
    cfg = ctx.config
    strategy = str(cfg.get("subtechnique") or "window")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown context strategy {strategy!r}: choose {', '.join(STRATEGIES)}")
    history = _history(ctx)
    counter = get_counter(cfg.get("model"))
    options: dict[str, Any] = {
        k: cfg.get(k)
        for k in CONFIG_SCHEMA.fields
        if k not in ("history", "provider", "model", "summary_method")
    }
    options.update(
        counter=counter,
        current=cfg.get("current") or ctx.query or "",
        summary=str(ctx.session.get("conversation_summary") or ""),
        offset=int(ctx.session.get("history_offset") or 0) if _from_session(ctx) else 0,
        system_prompt=str(cfg.get("system_prompt") or ""),
    )
    if options.get("max_tokens") is None:
        options["max_tokens"] = 8000
    wants_model = (strategy == "compression" and cfg.get("compression_method") == "abstractive") or (
        strategy == "summary" and cfg.get("summary_method") == "abstractive"
    )
    if wants_model:
        provider = ctx.provider()
        loop = asyncio.get_running_loop()

        def abstract(messages: Sequence[Mapping[str, Any]], target: int) -> str:
            prompt = [
                {"role": "system", "content": _ABSTRACT_PROMPT.format(n=target)},
                {"role": "user", "content": _transcript(messages)},
            ]
            fut = asyncio.run_coroutine_threadsafe(provider.complete(prompt, max_tokens=target), loop)
            return str(fut.result().text or "")

        # complete blocks are summarised once per provider and model (strategies memoise on this key)
        abstract.cache_key = (  # type: ignore[attr-defined]
            getattr(provider, "name", None) or cfg.get("provider") or "primary",
            cfg.get("model"),
        )
        options["abstract"] = abstract
        result = await asyncio.to_thread(build_context, strategy, history, **options)
    else:
        result = build_context(strategy, history, **options)
    ctx.session["context_messages"] = result.messages
    ctx.session["token_allocation"] = dict(result.allocation)
    ctx.emit(
        "token_allocation",
        strategy=strategy,
        allocation=dict(result.allocation),
        max_tokens=result.max_tokens,
        kept=dict(result.kept),
    )
    out = result.to_dict()
    out["history_length"] = len(history)
    return out


register_technique(
    "workflow_orchestration.context_management",
    context_management,
    blocking=False,
    subtechniques=tuple(STRATEGIES),
    config_schema=CONFIG_SCHEMA,
    outputs=OUTPUTS,
)
