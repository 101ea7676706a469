"""The chat-memory peers the session and recall benchmarks compare with, built one way for both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sibyl_nb.context.tokens import get_counter

__all__ = ["llamaindex_buffer"]


def llamaindex_buffer(history: Sequence[Mapping[str, Any]], token_limit: int) -> tuple[Any, Any] | None:
    """``(buffer, ChatMessage)``: LlamaIndex's ChatMemoryBuffer holding ``history`` under ``token_limit``,
    counting with the same tiktoken encoding as sibyl_nb; None when llama-index-core is not installed."""
    try:
        from llama_index.core.base.llms.types import ChatMessage
        from llama_index.core.memory import ChatMemoryBuffer
    except ImportError:
        return None
    buf = ChatMemoryBuffer.from_defaults(
        token_limit=token_limit, tokenizer_fn=get_counter()._enc.encode_ordinary
    )
    buf.set([ChatMessage(role=m["role"], content=m["content"]) for m in history])
    return buf, ChatMessage
