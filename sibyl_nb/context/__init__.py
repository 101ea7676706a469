"""Context management: offline token counting (each message counted once), four strategies that
return the context *and* a token allocation, and a side-by-side comparison.

Importing this package is cheap: no pandas, no tiktoken data until something is counted.
"""

from __future__ import annotations

from .compare import compare_context_strategies
from .extractive import compress_text, summarize_messages
from .strategies import (
    ALLOCATION_KEYS,
    STRATEGIES,
    ContextResult,
    build_context,
    compression_context,
    hierarchical_context,
    summary_context,
    window_context,
)
from .tokens import TokenCounter, count_tokens, get_counter, message_tokens, messages_tokens

__all__ = [
    "compare_context_strategies",
    "build_context",
    "window_context",
    "compression_context",
    "summary_context",
    "hierarchical_context",
    "ContextResult",
    "ALLOCATION_KEYS",
    "STRATEGIES",
    "TokenCounter",
    "get_counter",
    "count_tokens",
    "message_tokens",
    "messages_tokens",
    "compress_text",
    "summarize_messages",
]
