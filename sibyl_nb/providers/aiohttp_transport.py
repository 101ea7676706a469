"""httpx's API on aiohttp's connection pool, for the OpenAI-compatible provider's async client.

Why: httpcore's async pool does work proportional to (waiting requests x connections) on every
request; at 50 concurrent calls on loopback that is ~5 ms of CPU per call against ~0.4 ms for
aiohttp, which put a 50 ms-per-call sweep at ~4x its ideal wall time. ``httpx_aiohttp`` plugs
aiohttp in as an httpx transport, so timeouts, streaming, retries and error handling keep httpx's
API. Its exception mapping, though, is coarse (connection refused and a dropped connection both
come out as ``ConnectTimeout``), so this module maps aiohttp's errors to the httpx classes
httpcore raises for the same failure: what a caller catches and retries stays as it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["AioHTTPTransport", "as_httpx_error"]

# Most specific first: the first class an error is an instance of decides.
_MAP: tuple[tuple[type[aiohttp.ClientError], type[httpx.TransportError]], ...] = (
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientHttpProxyError, httpx.ProxyError),
    (aiohttp.ClientSSLError, httpx.ConnectError),  # certificate and handshake errors
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # sock_read: no byte within the timeout
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, unreachable, DNS
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),  # closed before/while answering
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),  # body cut short, bad chunking
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # malformed status line or headers
    (aiohttp.ClientConnectionError, httpx.ReadError),  # reset, other socket errors
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.InvalidUrlClientError, httpx.UnsupportedProtocol),
)


def as_httpx_error(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx error httpcore would raise for the failure aiohttp reported as ``exc``."""
    for source, target in _MAP:
        if isinstance(exc, source):
            return target(str(exc) or type(exc).__name__)
    return httpx.TransportError(str(exc) or type(exc).__name__)


def _aiohttp_cause(exc: BaseException) -> aiohttp.ClientError | None:
    """The aiohttp error behind ``exc``: itself, or what ``httpx_aiohttp`` mapped (its ``__cause__``)."""
    if isinstance(exc, aiohttp.ClientError):
        return exc
    if isinstance(exc, httpx.TransportError) and isinstance(exc.__cause__, aiohttp.ClientError):
        return exc.__cause__
    return None


def _received(content: aiohttp.StreamReader) -> bytes:
    """What aiohttp received but holds back once the connection has failed (its reads raise at once)."""
    read = getattr(content, "_read_nowait", None)  # private, stable since aiohttp 3.0
    if read is None or not getattr(content, "_buffer", None):
        return b""
    try:
        data = read(-1)
    except Exception:  # nothing more to hand out
        return b""
    return data if isinstance(data, bytes) else b""


class _ResponseStream(httpx.AsyncByteStream):
    """A response body read as it arrives, its errors as httpx's.

    When the connection fails aiohttp's reads raise at once, dropping what it had received but not
    yet handed out; httpcore hands that out first. For a stream the difference is the last tokens
    before a dropped connection (and whether any text arrived, which decides a retry), so this
    hands them out too.
    """

    def __init__(self, response: aiohttp.ClientResponse, inner: httpx.AsyncByteStream) -> None:
        self.response = response
        self.inner = inner  # httpx_aiohttp's stream: its ``aclose`` releases the connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self.response.content
        while True:
            try:
                chunk = await content.readany()
            except aiohttp.ClientError as exc:
                rest = _received(content)
                if rest:
                    yield rest
                raise as_httpx_error(exc) from exc
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        except (aiohttp.ClientError, httpx.TransportError) as exc:
            cause = _aiohttp_cause(exc)
            if cause is None:
                raise
            raise as_httpx_error(cause) from cause


class AioHTTPTransport(AiohttpTransport):
    """``httpx_aiohttp.AiohttpTransport`` with httpcore's exception classes; its session is made on
    the first request (so on the running loop) and closed by ``aclose`` (``AsyncClient.aclose``)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (aiohttp.ClientError, httpx.TransportError) as exc:
            cause = _aiohttp_cause(exc)
            if cause is None:
                raise
            raise as_httpx_error(cause) from cause
        inner = response.stream
        aio = getattr(inner, "_aiohttp_response", None)  # httpx_aiohttp 0.2's stream holds it
        assert isinstance(inner, httpx.AsyncByteStream) and isinstance(aio, aiohttp.ClientResponse), inner
        response.stream = _ResponseStream(aio, inner)
        return response
