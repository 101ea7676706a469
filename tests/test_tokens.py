"""Token counting: offline cl100k, model -> encoding, chat overhead, each message counted once."""

from __future__ import annotations

import socket
import warnings

import pytest

from sibyl_nb.context import tokens as tk
from sibyl_nb.context.tokens import (
    REPLY_PRIMING,
    TOKENS_PER_MESSAGE,
    TokenCounter,
    count_tokens,
    encoding_for_model,
    get_counter,
)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: counting must never download."""

    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_cl100k_counts_offline(no_network):
    c = TokenCounter("cl100k_base")
    assert c.encoding == "cl100k_base"
    assert c.count("hello world") == 2
    assert c.count("") == 0
    assert c.encode("hello world") == [15339, 1917]  # the real cl100k ids
    assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10


def test_encoding_follows_the_model():
    assert encoding_for_model("gpt-4") == "cl100k_base"
    assert encoding_for_model("gpt-3.5-turbo") == "cl100k_base"
    assert encoding_for_model("gpt-4o") == "o200k_base"
    assert encoding_for_model("some-local-model") == "cl100k_base"
    assert encoding_for_model(None) == "cl100k_base"


def test_unavailable_encoding_falls_back_and_warns_once(no_network, monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: o200k is not on disk
    monkeypatch.setattr(tk, "_WARNED", set())
    monkeypatch.setattr(tk, "_COUNTERS", {})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = get_counter("gpt-4o")
        get_counter("gpt-4o")
        TokenCounter("o200k_base")
    msgs = [w for w in caught if "o200k_base" in str(w.message)]
    assert len(msgs) == 1 and "cl100k" in str(msgs[0].message)
    assert c.encoding == "cl100k_base" and c.requested == "o200k_base"
    assert c.count("hello world") == 2


def test_chat_overhead_matches_the_cookbook():
    c = get_counter("gpt-4")
    msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hi"}]
    # system: 3 + 1 (role) + 6 (content); user: 3 + 1 + 1; reply priming: 3.
    assert c.messages_tokens(msgs) == 18
    named = {"role": "user", "name": "alice", "content": "Hi"}
    assert c.message_tokens(named) == TOKENS_PER_MESSAGE + 1 + 1 + 1 + c.count("alice")
    assert REPLY_PRIMING == 3


def test_each_message_is_counted_once(monkeypatch):
    c = TokenCounter("cl100k_base")
    m = {"role": "user", "content": "count me once, please"}
    n = c.message_tokens(m)
    assert m["tokens"] == n
    calls = []
    real = c._encode
    monkeypatch.setattr(c, "_encode", lambda text: calls.append(text) or real(text))
    for _ in range(5):
        assert c.message_tokens(m) == n
    assert calls == []  # served from the cached count


def test_content_parts_and_truncate():
    c = get_counter()
    m = {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]}
    assert c.message_tokens(m) == TOKENS_PER_MESSAGE + 1 + c.count("hello world")
    text = "one two three four five six seven"
    assert c.count(c.truncate(text, 3)) == 3
    assert c.truncate(text, 100) == text
    assert c.truncate(text, 0) == ""


def test_a_cached_count_belongs_to_the_content_it_counted():
    c = get_counter()
    m = {"role": "user", "content": "short"}
    short = c.message_tokens(m)
    long_text = "a much longer message about many different things " * 50
    m["content"] = long_text  # edited after it was counted
    assert c.message_tokens(m) == TOKENS_PER_MESSAGE + 1 + c.count(long_text) != short
    assert m["tokens"] == c.message_tokens(m)


def test_a_user_supplied_token_count_is_not_trusted():
    c = get_counter()
    text = "twenty or so tokens of perfectly ordinary conversation go here, in this message"
    forged = {"role": "user", "content": text, "tokens": 1}
    assert c.message_tokens(forged) == TOKENS_PER_MESSAGE + 1 + c.count(text)
    stale = {"role": "user", "content": text, "tokens": 1, "tokens_of": "0123456789abcdef"}
    assert c.message_tokens(stale) == TOKENS_PER_MESSAGE + 1 + c.count(text)
