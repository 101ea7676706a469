"""A real HTTP server on 127.0.0.1 speaking OpenAI chat completions, scripted per test.

Stdlib only (``http.server`` in a daemon thread, HTTP/1.1 keep-alive, chunked SSE), so provider
tests exercise real sockets, real timeouts and real streaming rather than a mocked transport.

    with StubServer() as server:
        server.script(StatusReply(429, headers={"Retry-After": "0"}), JSONReply(chat_body("hi")))
        provider = OpenAICompatibleProvider("p", server.url, "stub-model")
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import weakref
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "StubServer",
    "JSONReply",
    "SSEReply",
    "StatusReply",
    "AutoReply",
    "RecordedRequest",
    "chat_body",
    "sse_chunks",
    "DEFAULT_USAGE",
]

DEFAULT_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


def chat_body(
    text: str, *, model: str = "stub-model", usage: dict[str, int] | None = None, finish_reason: str = "stop"
) -> dict[str, Any]:
    """A non-streaming chat.completion response body."""
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": dict(DEFAULT_USAGE if usage is None else usage),
    }


def sse_chunks(
    deltas: list[str], *, model: str = "stub-model", usage: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """chat.completion.chunk objects: a role chunk, one per delta, a finish chunk, then (when
    ``usage`` is given) the ``include_usage`` chunk with empty ``choices``."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": d}) for d in deltas]
    out.append(chunk({}, "stop"))
    if usage is not None:
        out.append(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [],
                "usage": usage,
            }
        )
    return out


@dataclass
class JSONReply:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (to trigger client timeouts)


@dataclass
class StatusReply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SSEReply:
    chunks: list[Any]  # dicts (sent as JSON) or raw strings
    delay: float = 0.0  # between chunks
    done: bool = True  # send ``data: [DONE]`` at the end


@dataclass
class AutoReply:
    """Answer ``text`` as JSON or SSE, whichever the request asked for."""

    text: str
    usage: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_USAGE))
    model: str = "stub-model"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.stub._track(self.connection)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        stub = self.server.stub
        stub._record(
            RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        reply = stub._next_reply()
        try:
            self._answer(reply, body if isinstance(body, dict) else {})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout): nothing to do

    def _answer(self, reply: Any, request: dict[str, Any]) -> None:
        if isinstance(reply, AutoReply):
            if request.get("stream"):
                include = (request.get("stream_options") or {}).get("include_usage")
                words = reply.text.split(" ")
                deltas = [w if i == 0 else " " + w for i, w in enumerate(words)]
                reply = SSEReply(
                    sse_chunks(deltas, model=reply.model, usage=reply.usage if include else None)
                )
            else:
                reply = JSONReply(chat_body(reply.text, model=reply.model, usage=reply.usage))
        if isinstance(reply, JSONReply):
            if reply.delay and self.server.stub._stopping.wait(reply.delay):
                self.close_connection = True
                return
            self._send_json(reply.status, reply.body, reply.headers)
        elif isinstance(reply, StatusReply):
            body = (
                reply.body
                if reply.body is not None
                else {"error": {"message": f"stub says {reply.status}", "type": "stub_error"}}
            )
            self._send_json(reply.status, body, reply.headers)
        elif isinstance(reply, SSEReply):
            self._send_sse(reply)
        else:  # pragma: no cover - a test scripting mistake
            raise TypeError(f"unknown reply {reply!r}")

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_sse(self, reply: SSEReply) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [c if isinstance(c, str) else json.dumps(c) for c in reply.chunks]
        if reply.done:
            events.append("[DONE]")
        for i, event in enumerate(events):
            if i and reply.delay and self.server.stub._stopping.wait(reply.delay):
                break
            self._write_chunk(f"data: {event}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    stub: StubServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up (timeouts, stop() cutting connections) is expected here, not news.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, OSError)):
            super().handle_error(request, client_address)


class StubServer:
    """Scripted replies, consumed in order; when the script runs out, ``default`` answers."""

    def __init__(self, default: Any = None) -> None:
        self.default = default if default is not None else AutoReply("Hello from the stub.")
        self.requests: list[RecordedRequest] = []
        self._script: list[Any] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a provider takes (``.../v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Any) -> StubServer:
        with self._lock:
            self._script.extend(replies)
        return self

    @property
    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.add(sock)

    def _next_reply(self) -> Any:
        with self._lock:
            return self._script.pop(0) if self._script else self.default

    def start(self) -> StubServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stub = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"openai-stub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening *and* cut kept-alive connections, so a stopped server really answers nothing."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
