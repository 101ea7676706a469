"""The OpenAI-compatible provider's HTTP client (httpx's API on aiohttp's pool): each network failure is
reported with the error class httpcore gave it (what users read and what the retry rules decide on),
and no run, sync or async, leaves an aiohttp session open ("Unclosed client session")."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from openai_stub_server import sse_chunks

from sibyl_nb.errors import ProviderError
from sibyl_nb.providers.openai_compat import OpenAICompatibleProvider

MESSAGES = [{"role": "user", "content": "Capital of France?"}]
TESTS = Path(__file__).parent


def call(url: str, streaming: bool = False, timeout: float = 2.0) -> Any:
    provider = OpenAICompatibleProvider(
        "p", url, "m", api_key_env=None, timeout=timeout, max_retries=1, backoff_initial=0.01
    )

    async def main() -> Any:
        try:
            if streaming:
                return await provider.complete(MESSAGES, on_token=lambda _delta: None)
            return await provider.complete(MESSAGES)
        finally:
            await provider.aclose()

    return asyncio.run(main())


def hang_up(conn: socket.socket) -> None:
    conn.close()


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def silent(conn: socket.socket) -> None:
    time.sleep(1.0)


def cut_after_first_text(conn: socket.socket) -> None:
    events = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in sse_chunks(["Par", "is"])[:2])
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.sendall(head + f"{len(events):x}\r\n".encode() + events + b"\r\n")


def short_body(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")


def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        ProviderError, match=r"attempt 2/2\) failed: connection failed \(ConnectError: "
    ) as err:
        call(f"http://127.0.0.1:{port}/v1")
    assert err.value.retryable is True


@pytest.mark.parametrize(
    ("respond", "streaming", "reported"),
    [
        (hang_up, False, r"attempt 2/2\) failed: connection failed \(RemoteProtocolError: "),
        (not_http, False, r"attempt 2/2\) failed: connection failed \(RemoteProtocolError: "),
        (
            short_body,
            False,
            r"attempt 2/2\) failed: connection failed reading the response \(RemoteProtocolError\)",
        ),
        (silent, False, r"attempt 2/2\) failed: timed out after 0.3s \((ReadTimeout|TimeoutError)\)"),
        (
            cut_after_first_text,
            True,
            r"attempt 1/2\): stream interrupted \(RemoteProtocolError\) after the first",
        ),
    ],
    ids=["hang-up", "not-http", "short-body", "silent", "stream-cut"],
)
def test_each_failure_is_reported_as_httpcore_reported_it(
    raw: Any, respond: Any, streaming: bool, reported: str
) -> None:
    server = raw(respond)
    with pytest.raises(ProviderError, match=reported) as err:
        call(server.url, streaming, timeout=0.3)
    assert err.value.retryable is True
    assert server.requests == (1 if respond is cut_after_first_text else 2)


SCRIPT = """
import asyncio, gc, logging, sys, warnings
sys.path.insert(0, {tests!r})
warnings.simplefilter("always", ResourceWarning)
logging.basicConfig()  # aiohttp reports an unclosed session through asyncio's logger
from openai_stub_server import JSONReply, StubServer, chat_body
import sibyl_nb as sb

DOC = '''
providers:
  stub: {{kind: openai_compatible, base_url: "%s", model: m}}
pipelines:
  p:
    steps:
      - id: a
        use: ai_generation.generation
        config: {{provider: stub}}
'''
with StubServer(default=JSONReply(chat_body("ok"))) as server:
    def load():
        return sb.Pipeline.from_yaml(DOC % server.url, name="p", trust_code=True)

    pipe = load()  # sync runs: the engine's reused per-thread loop, which never shuts down
    outputs = [pipe.run({{"query": "q1"}}).output["text"], pipe.run({{"query": "q2"}}).output["text"]]
    del pipe
    gc.collect()

    async def in_a_loop():
        return (await load().execute({{"query": "q3"}})).output["text"]

    outputs.append(asyncio.run(in_a_loop()))
    kept = load()  # still alive when the process exits
    outputs.append(kept.run({{"query": "q4"}}).output["text"])
    print(outputs, len(server.requests))
"""


def test_sync_and_async_runs_leave_no_session_open() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT.format(tests=str(TESTS)))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['ok', 'ok', 'ok', 'ok'] 4"
    assert done.stderr == ""
