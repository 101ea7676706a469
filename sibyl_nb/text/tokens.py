"""Token counts for provider usage records, from the one offline counter (``sibyl_nb.context.tokens``).

Kept as a thin module so providers and techniques need not know about context strategies; the
counting itself (encoding choice, offline cl100k, chat overhead) lives in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from ..context.tokens import REPLY_PRIMING, content_text, get_counter

__all__ = ["count_tokens", "count_message_tokens", "token_encoding_name"]


def token_encoding_name() -> str:
    """The encoding really used (``cl100k_base`` offline), or ``chars/4`` without tiktoken data."""
    return get_counter().encoding


@lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """Tokens in ``text`` (cached: the same system prompt is counted once)."""
    return get_counter().count(text)


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of chat messages with the OpenAI framing (3 per message + role, 3 to prime)."""
    counter = get_counter()
    return REPLY_PRIMING + sum(
        counter.overhead(str(m.get("role") or "")) + count_tokens(content_text(m.get("content")))
        for m in messages
    )
