"""The HTTP provider against hostile loopback servers: a trickling body, a huge body, a redirect,
non-JSON and malformed answers all end in a clear ProviderError, within the configured time."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable

import pytest
from openai_stub_server import JSONReply, SSEReply, StubServer, chat_body

from sibyl_nb.errors import ProviderError, SibylError
from sibyl_nb.providers.openai_compat import OpenAICompatibleProvider

MESSAGES = [{"role": "user", "content": "hi"}]


def make(url: str, **kw) -> OpenAICompatibleProvider:
    opts = {"api_key_env": None, "backoff_initial": 0.01, "backoff_max": 0.05, **kw}
    return OpenAICompatibleProvider("primary", url, "stub-model", **opts)


def trickle(stop: threading.Event, every: float = 0.3) -> Callable[[socket.socket], None]:
    """Headers at once, then one byte of a 10,000-byte body every ``every`` seconds."""

    def respond(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{")
        while not stop.wait(every):
            conn.sendall(b" ")

    return respond


def test_trickling_server_cannot_hold_a_call_past_its_timeout(raw) -> None:
    # httpx's timeout is per read: a byte every 0.3 s never trips a 1.2 s read timeout, and the
    # 10,000-byte body would take 50 minutes. The attempt's deadline is the whole exchange.
    stop = threading.Event()
    server = raw(trickle(stop))
    provider = make(server.url, timeout=1.2, max_retries=0)
    t0 = time.perf_counter()
    try:
        with pytest.raises(ProviderError, match=r"timed out after 1.2s") as err:
            asyncio.run(provider.complete(MESSAGES))
    finally:
        stop.set()
    elapsed = time.perf_counter() - t0
    assert 1.1 < elapsed < 2.5, elapsed
    assert err.value.retryable is True


def test_deadline_bounds_the_whole_call_across_retries(raw) -> None:
    stop = threading.Event()
    server = raw(trickle(stop))
    provider = make(server.url, timeout=1.0, max_retries=5, deadline=1.5)
    t0 = time.perf_counter()
    try:
        with pytest.raises(ProviderError, match="deadline"):
            asyncio.run(provider.complete(MESSAGES))
    finally:
        stop.set()
    assert time.perf_counter() - t0 < 2.5
    assert server.requests == 2  # the second attempt got what was left of the 1.5 s


def test_trickling_stream_is_bounded_too(raw) -> None:
    stop = threading.Event()

    def respond(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        while not stop.wait(0.3):
            conn.sendall(b": keep-alive\n")

    server = raw(respond)
    provider = make(server.url, timeout=1.0, max_retries=0)
    t0 = time.perf_counter()
    try:
        with pytest.raises(ProviderError):
            asyncio.run(provider.complete(MESSAGES, on_token=lambda _t: None))
    finally:
        stop.set()
    assert time.perf_counter() - t0 < 2.5


def test_response_size_cap(raw) -> None:
    body = json.dumps(chat_body("x" * 3_000_000)).encode()

    def respond(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(body), 65536):
            part = body[i : i + 65536]
            conn.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    server = raw(respond)
    provider = make(server.url, max_response_bytes=1_000_000, max_retries=0)
    with pytest.raises(ProviderError, match="larger than max_response_bytes=1,000,000"):
        asyncio.run(provider.complete(MESSAGES))
    # a declared Content-Length over the cap is refused before reading the body
    with StubServer(JSONReply(chat_body("y" * 200_000))) as stub:
        small = make(stub.url, max_response_bytes=100_000, max_retries=0)
        with pytest.raises(
            ProviderError, match=r"larger than max_response_bytes=100,000 \(2\d\d,\d\d\d bytes\)"
        ):
            asyncio.run(small.complete(MESSAGES))
        assert asyncio.run(make(stub.url).complete(MESSAGES)).text == "y" * 200_000


def test_redirect_is_a_clear_error_and_not_followed(raw) -> None:
    def respond(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://203.0.113.1/steal\r\nContent-Length: 0\r\n\r\n"
        )

    server = raw(respond)
    provider = make(server.url, api_key="sk-secret", max_retries=2)
    with pytest.raises(ProviderError, match=r"redirected \(HTTP 307\) to http://203.0.113.1/steal") as err:
        asyncio.run(provider.complete(MESSAGES))
    assert "sk-secret" not in str(err.value)
    assert server.requests == 1  # not retried, not followed


@pytest.mark.parametrize(
    "reply,match",
    [
        (JSONReply("<html>502 Bad Gateway</html>"), r"response is not JSON \(application/json\)"),
        (JSONReply(["not", "an", "object"]), r"no choices\[0\]\.message"),
        (JSONReply({"choices": "many"}), r"no choices\[0\]\.message"),
        (JSONReply({"choices": []}), r"no choices\[0\]\.message"),
        (JSONReply({"choices": [{"message": {"content": 42}}]}), "content is int, not text"),
        (JSONReply({"choices": [{"message": {"content": {"a": 1}}}]}), "content is dict, not text"),
        (JSONReply({"choices": [{"message": {"content": [{"text": 3}]}}]}), "malformed content parts"),
        (SSEReply([{"choices": [{"delta": {"content": 7}}]}]), "delta content is int"),
        (SSEReply([{"choices": "x"}]), "malformed stream chunk"),
        (SSEReply(["{not json"]), "bad stream chunk"),
    ],
)
def test_malformed_answers_are_clear_provider_errors(reply, match) -> None:
    with StubServer() as stub:
        stub.script(reply)
        provider = make(stub.url, max_retries=0)
        call = (
            (lambda: provider.complete(MESSAGES, on_token=lambda _t: None))
            if isinstance(reply, SSEReply)
            else (lambda: provider.complete(MESSAGES))
        )
        with pytest.raises(ProviderError, match=match):
            asyncio.run(call())


def test_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]
    with StubServer(JSONReply({"choices": [{"message": {"content": parts}}]})) as stub:
        assert asyncio.run(make(stub.url).complete(MESSAGES)).text == "Hello world"


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"timeout": float("inf")}, "timeout must be a positive number"),
        ({"timeout": "3"}, "timeout must be a positive number"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"max_retries": 2.5}, "max_retries must be an integer"),
        ({"extra_headers": {"X-A": 1}}, "headers must map header names to strings"),
    ],
)
def test_constructor_rejects_bad_settings(kw, match) -> None:
    with pytest.raises(SibylError, match=match):
        make("http://127.0.0.1:9/v1", **kw)
