"""The HTTP provider's retry rules, one test per rule, against real loopback servers: which failures are
tried again and exactly how often, that a stream is never retried once text has been handed out, and
that a server's ``Retry-After`` is honoured but bounded (by the cap and by the call's deadline)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openai_stub_server import JSONReply, SSEReply, StatusReply, StubServer, chat_body, sse_chunks

from sibyl_nb.errors import ProviderError
from sibyl_nb.providers.openai_compat import OpenAICompatibleProvider

MESSAGES = [{"role": "user", "content": "Capital of France?"}]
LOGGER = "sibyl_nb.providers.openai"


@pytest.fixture
def server() -> Iterator[StubServer]:
    with StubServer() as stub:
        yield stub


def make(url: str, **kw: Any) -> OpenAICompatibleProvider:
    opts: dict[str, Any] = {"api_key_env": None, "timeout": 2.0, "backoff_initial": 0.01, "backoff_max": 0.02}
    return OpenAICompatibleProvider("primary", url, "stub-model", **{**opts, **kw})


def call(provider: OpenAICompatibleProvider, streaming: bool, seen: list[str] | None = None) -> Any:
    """``complete`` on a fresh loop, streaming (``on_token``) or not; closes the loop's client."""

    async def main() -> Any:
        try:
            if streaming:
                return await provider.complete(MESSAGES, on_token=(seen if seen is not None else []).append)
            return await provider.complete(MESSAGES)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def ok_reply(streaming: bool) -> JSONReply | SSEReply:
    return SSEReply(sse_chunks(["Paris"])) if streaming else JSONReply(chat_body("Paris"))


# -- which failures are retried, and how often ----------------------------------------------------


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_status_is_tried_again_until_it_succeeds(
    server: StubServer, status: int, streaming: bool
) -> None:
    server.script(StatusReply(status), StatusReply(status), ok_reply(streaming))
    out = call(make(server.url, max_retries=3), streaming)
    assert out.text == "Paris"
    assert len(server.requests) == 3  # two failures, then the answer; the fourth attempt is not needed


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_retryable_status_is_tried_exactly_max_retries_plus_one_times(
    server: StubServer, max_retries: int, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server.default = StatusReply(503, body={"error": {"message": "overloaded"}})
    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(ProviderError) as err:
        call(make(server.url, max_retries=max_retries), streaming)
    attempts = max_retries + 1
    assert len(server.requests) == attempts
    assert str(err.value) == (
        f"provider 'primary': POST {server.url}/chat/completions (attempt {attempts}/{attempts}) failed: "
        f"HTTP 503: overloaded; giving up after {attempts} attempt(s)"
    )
    assert err.value.status == 503 and err.value.retryable is True
    retried = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert [m.split(" failed")[0] for m in retried] == [
        f"provider 'primary': POST {server.url}/chat/completions (attempt {n}/{attempts})"
        for n in range(1, attempts)
    ]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_is_never_retried(server: StubServer, status: int) -> None:
    server.default = StatusReply(status, body={"error": {"message": "no"}})
    with pytest.raises(ProviderError, match=f"HTTP {status}: no$") as err:
        call(make(server.url, max_retries=3), streaming=False)
    assert len(server.requests) == 1 and err.value.retryable is False


def hang_up_then_answer(hang_ups: int, answer: bytes) -> Callable[[socket.socket], None]:
    """Close the first ``hang_ups`` connections without a byte of answer, then send ``answer``."""
    seen = {"n": 0}

    def respond(conn: socket.socket) -> None:
        seen["n"] += 1
        if seen["n"] > hang_ups:
            conn.sendall(answer)

    return respond


def http_answer(content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def chunked_head() -> bytes:
    """An SSE answer in chunked encoding: a hang-up before its last chunk is a broken stream, not its end."""
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def sse_body(deltas: list[str]) -> bytes:
    return b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in sse_chunks(deltas)) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
def test_connection_dropped_before_an_answer_is_retried(raw: Any, streaming: bool) -> None:
    answer = (
        http_answer("text/event-stream", sse_body(["Paris"]))
        if streaming
        else http_answer("application/json", json.dumps(chat_body("Paris")).encode())
    )
    server = raw(hang_up_then_answer(2, answer))
    out = call(make(server.url, max_retries=2), streaming)
    assert out.text == "Paris" and server.requests == 3


def test_connection_dropped_every_time_gives_up_after_the_last_attempt(raw: Any) -> None:
    server = raw(hang_up_then_answer(99, b""))
    with pytest.raises(ProviderError, match=r"\(attempt 3/3\) failed: connection failed .*after 3 attempt"):
        call(make(server.url, max_retries=2), streaming=False)
    assert server.requests == 3


# -- a stream is retried only until its first text ------------------------------------------------


def test_stream_dropped_after_the_first_text_is_not_retried(raw: Any) -> None:
    events = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in sse_chunks(["Par", "is"])[:2])

    def respond(conn: socket.socket) -> None:  # the role chunk and "Par", then the server hangs up
        conn.sendall(chunked_head() + f"{len(events):x}\r\n".encode() + events + b"\r\n")

    server = raw(respond)
    seen: list[str] = []
    with pytest.raises(ProviderError, match=r"stream interrupted \(\w+\) after the first tokens") as err:
        call(make(server.url, max_retries=3), streaming=True, seen=seen)
    assert seen == ["Par"] and server.requests == 1
    assert err.value.retryable is True  # a fallback provider or the node's retry: may still try


def test_stream_dropped_before_any_text_is_retried(raw: Any) -> None:
    role_only = f"data: {json.dumps(sse_chunks([])[0])}\n\n".encode()
    count = {"n": 0}

    def respond(conn: socket.socket) -> None:
        count["n"] += 1
        if count["n"] == 1:  # only the role chunk (no text), then the server hangs up
            conn.sendall(chunked_head() + f"{len(role_only):x}\r\n".encode() + role_only + b"\r\n")
        else:
            conn.sendall(http_answer("text/event-stream", sse_body(["Paris"])))

    server = raw(respond)
    seen: list[str] = []
    out = call(make(server.url, max_retries=1), streaming=True, seen=seen)
    assert seen == ["Paris"] and out.text == "Paris" and server.requests == 2


def test_leaving_a_stream_early_closes_it_cleanly(server: StubServer) -> None:
    # After a retried opening, a caller that stops at the first delta closes the stream: no warning
    # (unclosed generator, "ignored GeneratorExit", unclosed transport) and no further request.
    server.script(StatusReply(503), SSEReply(sse_chunks(["one", "two", "three"])))
    provider = make(server.url, max_retries=1)

    async def first_delta() -> str:
        stream = provider.stream(MESSAGES)
        try:
            async for delta in stream:
                return delta
            return ""
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await provider.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert asyncio.run(first_delta()) == "one"
    assert len(server.requests) == 2


# -- Retry-After is honoured, within bounds -------------------------------------------------------


def test_retry_after_replaces_the_backoff(server: StubServer, caplog: pytest.LogCaptureFixture) -> None:
    # A 30 s backoff would be used without the header; the server's 0.2 s (retry-after-ms) wins.
    server.script(
        StatusReply(429, headers={"retry-after-ms": "200", "Retry-After": "30"}), JSONReply(chat_body("ok"))
    )
    provider = make(server.url, max_retries=1, backoff_initial=30.0, backoff_max=30.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert call(provider, streaming=False).text == "ok"
    assert [r.getMessage().rsplit("; ", 1)[1] for r in caplog.records if "retrying" in r.getMessage()] == [
        "retrying in 0.20s"
    ]
    assert len(server.requests) == 2


def test_retry_after_is_capped_at_a_minute(server: StubServer, caplog: pytest.LogCaptureFixture) -> None:
    server.default = StatusReply(429, headers={"Retry-After": "3600"})
    provider = make(server.url, max_retries=1)

    async def main() -> None:
        try:  # the wait has started once the retry is logged: no need to sit through it
            await asyncio.wait_for(provider.complete(MESSAGES), 1.0)
        finally:
            await provider.aclose()

    with caplog.at_level(logging.INFO, logger=LOGGER), pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    assert [r.getMessage().rsplit("; ", 1)[1] for r in caplog.records if "retrying" in r.getMessage()] == [
        "retrying in 60.00s"
    ]
    assert len(server.requests) == 1


def test_retry_after_past_the_deadline_ends_the_call_at_once(server: StubServer) -> None:
    server.default = StatusReply(429, headers={"Retry-After": "30"})
    provider = make(server.url, max_retries=5, deadline=10.0)
    with pytest.raises(ProviderError) as err:
        call(provider, streaming=False)
    assert str(err.value).endswith(
        "failed: HTTP 429: stub says 429; the call's deadline leaves no time to retry"
    )
    assert "(attempt 1/6)" in str(err.value) and err.value.status == 429 and err.value.retryable is True
    assert len(server.requests) == 1
