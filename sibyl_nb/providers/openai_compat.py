"""A provider for any server speaking OpenAI chat completions: OpenAI, vLLM, Ollama, llama.cpp
server, LM Studio. They share one wire protocol, so one class serves them all.

Why it looks the way it does:

- One ``httpx.AsyncClient`` per provider *per event loop*: a client's pooled connections belong to
  the loop that opened them, and a notebook may call from several loops (the kernel's, a magic's
  background loop, ``asyncio.run`` in a script). Reusing a client within a loop keeps connections
  (and TLS sessions) alive. Measured on loopback: 0.7 ms per call with the loop's client vs 18 ms
  with a fresh ``AsyncClient`` per call, ~17 ms of which is loading the CA bundle; that TLS context
  is built once per process and shared, so a new loop's client costs ~0.4 ms to build, not 17.
  The client (and its aiohttp session) is closed on its own loop when that loop shuts down.
- The client speaks httpx's API over aiohttp's connection pool (``aiohttp_transport.py``):
  httpcore's pool costs ~5 ms of CPU per call at 50 concurrent calls, aiohttp's ~0.4 ms.
- Retries (429, 408, 5xx, timeouts, connection errors) are tenacity's, with exponential backoff
  honouring the server's ``Retry-After`` (``http_retry.py`` holds the policy); other 4xx fail at
  once because repeating them cannot help. A stream is retried only until its first text delta.
- The API key comes from ``api_key`` or an environment variable, goes only into the
  ``Authorization`` header of requests to ``base_url``, and never into logs, reprs or errors.
- ``timeout`` is a deadline for each attempt's whole exchange (connect to last byte), not httpx's
  per-read timeout: a server trickling one byte a second would otherwise hold a call forever.
  ``deadline`` (optional) bounds the whole call, retries and waits included. A body over
  ``max_response_bytes`` is refused; redirects are not followed (a redirect would carry the API key
  elsewhere) and, like malformed or non-JSON bodies, end in a clear :class:`ProviderError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

try:
    import httpx
    import tenacity

    from .aiohttp_transport import AioHTTPTransport
except ImportError:  # pragma: no cover - the ``http`` extra is not installed
    httpx = None  # type: ignore[assignment]

from ..document.schema import PROVIDER_SCHEMA
from ..errors import ConfigError, ProviderError
from .base import Completion, Message, Provider
from .http_retry import backoff_delay, is_retryable_status, retry_after_seconds
from .streaming import TokenCallback, emit_token

__all__ = ["OpenAICompatibleProvider", "KIND_DEFAULT_BASE_URLS", "provider_from_config", "estimate_tokens"]

logger = logging.getLogger("sibyl_nb.providers.openai")

# Where each kind listens out of the box, so a YAML entry can be just ``{kind: ollama, model: llama3}``.
KIND_DEFAULT_BASE_URLS: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "openai_compatible": None,  # no sensible default: must be given
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
}

# Call parameters that steer this client rather than go into the request body.
_CLIENT_PARAMS = frozenset({"on_token", "timeout", "deadline", "extra_body", "stream", "stream_options"})
DEFAULT_MAX_RESPONSE_BYTES = 16 * 2**20
_ERROR_BODY_BYTES = 64 * 1024  # of an error response, enough for the message


class _Deadline:
    """Wall-clock budget of one attempt (and optionally of the whole call)."""

    __slots__ = ("seconds", "at", "call_at")

    def __init__(self, seconds: float, call_at: float | None = None) -> None:
        now = time.monotonic()
        self.seconds = seconds
        self.at = now + seconds if call_at is None else min(now + seconds, call_at)
        self.call_at = call_at

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


@dataclass
class _StreamState:
    """What a stream has told us so far: enough to build the final :class:`Completion`."""

    parts: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    model: str = ""
    finish_reason: str = "stop"


@dataclass
class _OpenStream:
    """A stream whose opening succeeded: the chunks read so far (up to the first text delta) and
    the rest still to read (``None`` when the answer has ended)."""

    response: httpx.Response
    attempt: int
    deadline: _Deadline
    head: list[dict[str, Any]]
    rest: AsyncGenerator[str, None] | None

    async def close(self) -> None:
        if self.rest is not None:
            await self.rest.aclose()
        await self.response.aclose()


class _Attempts:
    """The attempts of one call, each with its number and deadline: ``async for attempt, number,
    deadline in _Attempts(provider, params): with attempt: ...`` (tenacity's loop, see ``_retrying``)."""

    def __init__(self, provider: OpenAICompatibleProvider, params: dict[str, Any]) -> None:
        self.seconds = float(params.get("timeout") or provider.timeout)
        self.call_at = provider._call_deadline(params)
        self.attempts = provider._retrying(self.call_at).__aiter__()

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> tuple[tenacity.AttemptManager, int, _Deadline]:
        attempt = await self.attempts.__anext__()
        return attempt, attempt.retry_state.attempt_number, _Deadline(self.seconds, self.call_at)


def _failure(state: tenacity.RetryCallState) -> _Retry:
    """The :class:`_Retry` an attempt ended in (tenacity only retries those)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    assert isinstance(exc, _Retry), exc
    return exc


def _interrupted(exc: BaseException, deadline: _Deadline) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"stream not finished within {deadline.seconds:g}s"
    return f"stream interrupted ({type(exc).__name__})"


async def _close_on_shutdown(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


class _LoopClient:
    """A client bound to one loop, closed *on that loop* when it shuts down.

    The loop's ``shutdown_asyncgens()`` (which ``asyncio.run`` and ``Runner`` call before closing)
    finalises every live async generator it has seen; an async generator parked at its ``yield`` is
    thus a shutdown hook that runs ``client.aclose()`` while the loop can still do it. Without it a
    script calling ``asyncio.run`` per request leaks its sockets ("unclosed transport" warnings).
    A loop that never shuts down (the engine's reused per-thread loop for sync runs) is covered by
    :func:`_close_clients` when the provider is dropped or the process exits.
    """

    __slots__ = ("loop", "client", "closer", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
        self.loop = weakref.ref(loop)
        self.client = client
        self.thread = weakref.ref(threading.current_thread())
        self.closer = _close_on_shutdown(client)
        try:  # run it to its yield; this also registers it with the running loop
            self.closer.asend(None).send(None)
        except StopIteration:
            pass

    def close_soon(self) -> None:
        """Close the client on its loop: now if that loop is idle here, else when it next runs."""
        loop = self.loop()
        if loop is None or loop.is_closed():
            return  # its shutdown closed the client
        owner = self.thread()
        idle_here = not loop.is_running() and asyncio._get_running_loop() is None
        mine = owner is None or owner is threading.current_thread() or not owner.is_alive()
        if idle_here and mine:
            try:
                loop.run_until_complete(self.closer.aclose())
                return
            except RuntimeError:  # started running meanwhile: leave it to the loop
                pass
        with contextlib.suppress(RuntimeError):  # closed meanwhile: its shutdown closed the client
            loop.call_soon_threadsafe(loop.create_task, self.closer.aclose())


def _close_clients(clients: dict[int, _LoopClient]) -> None:
    """Close a dropped provider's clients (``weakref.finalize``: also at exit). Their loops' shutdown
    would, but a loop reused for sync runs never shuts down, and aiohttp reports a session that is
    garbage-collected open ("Unclosed client session")."""
    entries = list(clients.values())
    clients.clear()
    for entry in entries:
        entry.close_soon()


class OpenAICompatibleProvider:
    """Chat completions over HTTP (``POST {base_url}/chat/completions``).

    ``complete(messages, on_token=cb, **params)`` streams when ``cb`` is given (each delta goes to
    ``cb``) and returns the full :class:`Completion` either way; ``stream()`` yields the deltas.
    ``params`` (``max_tokens``, ``top_p``, ``stop``, ``temperature``, vendor extras...) go into the
    request body; ``timeout`` overrides the provider's for one call; ``extra_body`` is merged in.
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float | None = None,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        extra_headers: dict[str, str] | None = None,
        *,
        stream_usage: bool = True,
        require_api_key: bool | None = None,
        trust_env: bool | None = None,
        deadline: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if httpx is None:  # pragma: no cover
            raise ConfigError(
                f"provider '{name}': the OpenAI-compatible provider needs httpx and tenacity: "
                "pip install 'sibyl_nb[http]'"
            )
        if not base_url:
            raise ConfigError(f"provider '{name}': base_url is required (e.g. http://127.0.0.1:8000/v1)")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"provider '{name}': base_url must be an http(s) URL, got {base_url!r}")
        if not model:
            raise ConfigError(f"provider '{name}': model is required")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigError(f"provider '{name}': max_retries must be an integer >= 0, got {max_retries!r}")
        for label, value in (("timeout", timeout), ("deadline", deadline)):
            if value is None and label == "deadline":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ConfigError(
                    f"provider '{name}': {label} must be a positive number of seconds, got {value!r}"
                )
        if extra_headers is not None and (
            not isinstance(extra_headers, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra_headers.items())
        ):
            raise ConfigError(f"provider '{name}': headers must map header names to strings")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self._request_url = httpx.URL(self.url)  # parsed once, not on every request
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.deadline = None if deadline is None else float(deadline)
        self.max_response_bytes = int(max_response_bytes)
        self.extra_headers = dict(extra_headers or {})
        # Servers that reject ``stream_options`` (old ones) can turn it off; usage is then estimated.
        self.stream_usage = stream_usage
        host = parts.hostname or ""
        self.require_api_key = (host == "api.openai.com") if require_api_key is None else require_api_key
        # Proxy settings from the environment never help reach a loopback server; they may break it.
        self.trust_env = (not _is_loopback(host)) if trust_env is None else trust_env
        self._api_key = api_key
        self._clients: dict[int, _LoopClient] = {}
        weakref.finalize(self, _close_clients, self._clients)
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # no key in here, ever
        return (
            f"OpenAICompatibleProvider(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"
        )

    # -- configuration -------------------------------------------------------------------------

    @property
    def default_params(self) -> dict[str, Any]:
        """Body parameters every call sends unless overridden (part of a replay key)."""
        return {} if self.temperature is None else {"temperature": self.temperature}

    def _api_key_value(self) -> str | None:
        if self._api_key:
            return self._api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self.extra_headers)
        key = self._api_key_value()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        elif self.require_api_key:
            where = f"${self.api_key_env}" if self.api_key_env else "api_key"
            raise ProviderError(f"no API key for {self.base_url}: set {where}", provider=self.name)
        return headers

    def _body(self, messages: list[Message], params: dict[str, Any], stream: bool) -> dict[str, Any]:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ProviderError(
                "messages must be a list of {'role': ..., 'content': ...} dicts", provider=self.name
            )
        body: dict[str, Any] = {"model": self.model, "messages": messages, **self.default_params}
        body.update({k: v for k, v in params.items() if k not in _CLIENT_PARAMS and v is not None})
        body.update(params.get("extra_body") or {})
        if stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body

    # -- one client per event loop ---------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.get(id(loop))
            if entry is not None and entry.loop() is loop and not loop.is_closed():
                return entry.client
            # Forget clients whose loop is gone (asyncio.run already closed them, see _LoopClient).
            for key, other in list(self._clients.items()):
                other_loop = other.loop()
                if other_loop is None or other_loop.is_closed():
                    del self._clients[key]
            verify = _ssl_context(self.trust_env)
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                trust_env=self.trust_env,
                verify=verify,
                follow_redirects=False,
                # aiohttp's pool, not httpcore's (see aiohttp_transport.py); proxies from the
                # environment (``trust_env``) still go through httpx's own proxy transports.
                transport=AioHTTPTransport(verify=verify, trust_env=self.trust_env),
            )
            self._clients[id(loop)] = _LoopClient(loop, client)
            return client

    async def aclose(self) -> None:
        """Close this loop's client now (otherwise it closes when its loop shuts down)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.pop(id(loop), None)
        if entry is not None:
            await entry.closer.aclose()

    # -- requests with retries -------------------------------------------------------------------

    @property
    def _attempts(self) -> int:
        return self.max_retries + 1

    def _where(self, attempt: int) -> str:
        return f"POST {self.url} (attempt {attempt}/{self._attempts})"

    def _call_deadline(self, params: dict[str, Any]) -> float | None:
        seconds = params.get("deadline", self.deadline)
        return None if seconds is None else time.monotonic() + float(seconds)

    async def _send_once(self, body: dict[str, Any], *, attempt: int, deadline: _Deadline) -> httpx.Response:
        """One HTTP attempt up to the response headers: a 2xx response (body not yet read), or
        :class:`_Retry`, or a final :class:`ProviderError`."""
        client = self._client()
        request = client.build_request(
            "POST",
            self._request_url,
            json=body,
            headers=self._headers(),
            timeout=httpx.Timeout(max(deadline.remaining(), 0.001)),
        )
        try:
            response = await _within(client.send(request, stream=True), deadline)
        except (httpx.TimeoutException, asyncio.TimeoutError) as exc:
            raise _Retry(f"timed out after {deadline.seconds:g}s ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if status < 300:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_response_bytes:
                await response.aclose()
                raise self._too_large(attempt, int(length))
            return response
        try:
            raw = b"".join(
                [c async for c in _body_bytes(response, deadline, _ERROR_BODY_BYTES, truncate=True)]
            )
            detail = raw.decode("utf-8", "replace").strip()
        except (httpx.HTTPError, ProviderError):
            detail = ""
        finally:
            await response.aclose()
        if 300 <= status < 400:
            where = response.headers.get("location", "?")
            raise ProviderError(
                f"{self._where(attempt)}: the server redirected (HTTP {status}) to {where}; redirects are not "
                f"followed (they would carry the API key elsewhere): set base_url to the final URL",
                provider=self.name,
                status=status,
            )
        detail = _error_detail(detail)
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        if is_retryable_status(status):
            raise _Retry(reason, status, retry_after_seconds(response.headers))
        raise ProviderError(
            f"{self._where(attempt)} failed: {reason}",
            provider=self.name,
            status=status,
            retryable=False,
        )

    def _too_large(self, attempt: int, size: int | None = None) -> ProviderError:
        got = f" ({size:,} bytes)" if size else ""
        return ProviderError(
            f"{self._where(attempt)}: response larger than max_response_bytes={self.max_response_bytes:,}{got}",
            provider=self.name,
        )

    async def _read_json(self, response: httpx.Response, attempt: int, deadline: _Deadline) -> Any:
        """The whole body, within the attempt's deadline and the size cap, parsed as JSON."""
        try:
            raw = b"".join(
                [
                    c
                    async for c in _body_bytes(
                        response, deadline, self.max_response_bytes, provider=self, attempt=attempt
                    )
                ]
            )
        except (httpx.TimeoutException, asyncio.TimeoutError) as exc:
            raise _Retry(f"timed out after {deadline.seconds:g}s reading the response") from exc
        except httpx.TransportError as exc:
            raise _Retry(f"connection failed reading the response ({type(exc).__name__})") from exc
        finally:
            await response.aclose()
        try:
            return json.loads(raw)
        except ValueError as exc:
            kind = response.headers.get("content-type", "no content-type")
            raise ProviderError(
                f"{self._where(attempt)}: response is not JSON ({kind}): "
                f"{raw[:200].decode('utf-8', 'replace')!r}",
                provider=self.name,
            ) from exc

    # -- tenacity runs the attempts -----------------------------------------------------------------

    def _retrying(self, call_at: float | None) -> tenacity.AsyncRetrying:
        """The attempts of one call: a :class:`_Retry` is tried again after :meth:`_wait` unless
        the attempts are used up or the wait would pass the call's deadline; any other error ends
        the call at once. Used as ``async for attempt in ...: with attempt:`` around work that
        yields nothing: an attempt catches whatever is raised inside it, so a ``yield`` inside one
        would put the caller's own code (and a closing generator's ``GeneratorExit``) in it too."""

        def stop(state: tenacity.RetryCallState) -> bool:
            return state.attempt_number >= self._attempts or self._no_time_left(state, call_at)

        def give_up(state: tenacity.RetryCallState) -> None:
            retry = _failure(state)
            why = (
                "the call's deadline leaves no time to retry"
                if self._no_time_left(state, call_at)
                else f"giving up after {self._attempts} attempt(s)"
            )
            raise ProviderError(
                f"{self._where(state.attempt_number)} failed: {retry.reason}; {why}",
                provider=self.name,
                status=retry.status,
                retryable=True,
            ) from retry.__cause__

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retry),
            wait=self._wait,
            stop=stop,
            before_sleep=self._log_retry,
            retry_error_callback=give_up,
        )

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """The server's ``Retry-After`` when it sent one (capped), else jittered exponential backoff."""
        return backoff_delay(
            state.attempt_number, self.backoff_initial, self.backoff_max, _failure(state).retry_after
        )

    @staticmethod
    def _no_time_left(state: tenacity.RetryCallState, call_at: float | None) -> bool:
        return call_at is not None and time.monotonic() + state.upcoming_sleep >= call_at

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        logger.info(
            "provider '%s': %s failed: %s; retrying in %.2fs",
            self.name,
            self._where(state.attempt_number),
            _failure(state).reason,
            state.upcoming_sleep,
        )

    # -- public API -------------------------------------------------------------------------------

    async def complete(
        self, messages: list[Message], *, on_token: TokenCallback | None = None, **params: Any
    ) -> Completion:
        """One answer. With ``on_token``, streams and calls ``on_token(delta)`` per text delta."""
        if on_token is not None:
            return await self._complete_streaming(messages, on_token, params)
        body = self._body(messages, params, stream=False)
        async for attempt, number, deadline in _Attempts(self, params):
            with attempt:
                response = await self._send_once(body, attempt=number, deadline=deadline)
                data = await self._read_json(response, number, deadline)
                return self._parse_completion(data, number)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def stream(self, messages: list[Message], **params: Any) -> AsyncIterator[str]:
        """Yield text deltas as the server sends them."""
        params.pop("on_token", None)
        async with contextlib.aclosing(self._chunks(messages, params)) as chunks:  # closed with this one
            async for chunk in chunks:
                delta = _delta_text(chunk)
                if delta:
                    yield delta

    async def _complete_streaming(
        self, messages: list[Message], on_token: TokenCallback, params: dict[str, Any]
    ) -> Completion:
        state = _StreamState()
        async for chunk in self._chunks(messages, params):
            state.model = chunk.get("model") or state.model
            if isinstance(chunk.get("usage"), dict):
                state.usage = _usage(chunk["usage"])
            choices = chunk.get("choices") or []
            if choices and choices[0].get("finish_reason"):
                state.finish_reason = str(choices[0]["finish_reason"])
            delta = _delta_text(chunk)
            if delta:
                state.parts.append(delta)
                await emit_token(on_token, delta)
        text = "".join(state.parts)
        usage = state.usage or _estimated_usage(messages, text)
        return Completion(
            text=text,
            fields=_json_fields(text),
            usage=usage,
            model=state.model or self.model,
            provider=self.name,
            finish_reason=state.finish_reason,
        )

    async def _chunks(
        self, messages: list[Message], params: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Parsed SSE chunks. Only the opening is retried (:meth:`_open_stream`: the request, its
        status and the chunks up to the first text delta, none of them yielded yet). A stream that
        fails after that is not: a retry would repeat text the caller has already shown, so it
        ends in a retryable :class:`ProviderError` for a fallback or the node's ``retry:``."""
        body = self._body(messages, params, stream=True)
        opened = await self._open_stream(body, params)
        try:
            for first in opened.head:
                yield first
            if opened.rest is None:
                return
            async for data in opened.rest:
                chunk = self._decode_chunk(data, opened.attempt)
                if chunk is None:
                    return
                yield chunk
        except (httpx.TimeoutException, httpx.TransportError, asyncio.TimeoutError) as exc:
            raise ProviderError(
                f"{self._where(opened.attempt)}: {_interrupted(exc, opened.deadline)} after the first tokens",
                provider=self.name,
                retryable=True,
            ) from exc
        finally:
            await opened.close()

    async def _open_stream(self, body: dict[str, Any], params: dict[str, Any]) -> _OpenStream:
        """Send a streaming request, retried (by :meth:`_retrying`) until its first text delta."""
        async for attempt, number, deadline in _Attempts(self, params):
            with attempt:
                response = await self._send_once(body, attempt=number, deadline=deadline)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignores ``stream: true`` answers in one piece: pass it on.
                    data = await self._read_json(response, number, deadline)
                    head = [_as_chunk(self._parse_completion(data, number))]
                    return _OpenStream(response, number, deadline, head, None)
                rest = _sse_data(
                    _body_bytes(response, deadline, self.max_response_bytes, provider=self, attempt=number)
                )
                opened = _OpenStream(response, number, deadline, [], rest)
                try:
                    while not opened.head or not _delta_text(opened.head[-1]):
                        chunk = self._decode_chunk(await rest.__anext__(), number)
                        if chunk is None:
                            opened.rest = None  # [DONE] before any text: the answer is empty
                            break
                        opened.head.append(chunk)
                except StopAsyncIteration:
                    opened.rest = None
                except (httpx.TimeoutException, httpx.TransportError, asyncio.TimeoutError) as exc:
                    await opened.close()
                    raise _Retry(_interrupted(exc, deadline)) from exc
                except BaseException:
                    await opened.close()
                    raise
                return opened
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    # -- parsing ----------------------------------------------------------------------------------

    def _decode_chunk(self, data: str, attempt: int) -> dict[str, Any] | None:
        if data.strip() == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise ProviderError(
                f"{self._where(attempt)}: bad stream chunk {data[:200]!r}", provider=self.name
            ) from exc
        if not isinstance(chunk, dict):
            raise ProviderError(
                f"{self._where(attempt)}: bad stream chunk {data[:200]!r}", provider=self.name
            )
        if "error" in chunk:
            raise ProviderError(
                f"{self._where(attempt)}: server error in stream: {_error_detail(json.dumps(chunk))}",
                provider=self.name,
            )
        choices = chunk.get("choices")
        if choices is not None and not isinstance(choices, list):
            raise ProviderError(
                f"{self._where(attempt)}: malformed stream chunk {data[:200]!r}", provider=self.name
            )
        if choices:
            first = choices[0]
            delta = first.get("delta") if isinstance(first, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if not isinstance(first, dict) or (delta is not None and not isinstance(delta, dict)):
                raise ProviderError(
                    f"{self._where(attempt)}: malformed stream chunk {data[:200]!r}", provider=self.name
                )
            if content is not None and not isinstance(content, str):
                raise ProviderError(
                    f"{self._where(attempt)}: stream delta content is {type(content).__name__}, not text",
                    provider=self.name,
                )
        return chunk

    def _parse_completion(self, data: Any, attempt: int) -> Completion:
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(
                f"{self._where(attempt)}: no choices[0].message in response: {json.dumps(data)[:200]}",
                provider=self.name,
            ) from exc
        if isinstance(text, list):  # content parts: [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and isinstance(p.get("text", ""), str) for p in text):
                raise ProviderError(
                    f"{self._where(attempt)}: malformed content parts in response", provider=self.name
                )
            text = "".join(p.get("text", "") for p in text if p.get("type", "text") == "text")
        if not isinstance(text, str):
            raise ProviderError(
                f"{self._where(attempt)}: choices[0].message.content is {type(text).__name__}, not text",
                provider=self.name,
            )
        return Completion(
            text=text,
            fields=_json_fields(text),
            usage=_usage(data.get("usage")),
            model=str(data.get("model") or self.model),
            provider=self.name,
            finish_reason=str(choice.get("finish_reason") or "stop"),
        )


# -- helpers ---------------------------------------------------------------------------------------

_T = TypeVar("_T")
_timeout_at: Callable[[float], contextlib.AbstractAsyncContextManager[None]] | None = getattr(
    asyncio, "timeout_at", None
)
_SSL_CONTEXTS: dict[bool, ssl.SSLContext] = {}
_SSL_LOCK = threading.Lock()


def _ssl_context(trust_env: bool) -> ssl.SSLContext:
    """One verifying TLS context per process (per ``trust_env``), shared by every client."""
    with _SSL_LOCK:
        ctx = _SSL_CONTEXTS.get(trust_env)
        if ctx is None:
            ctx = _SSL_CONTEXTS[trust_env] = httpx.create_ssl_context(trust_env=trust_env)
        return ctx


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _within(awaitable: Awaitable[_T], deadline: _Deadline) -> _T:
    """``await awaitable`` until ``deadline`` (``TimeoutError`` past it). ``asyncio.timeout_at`` where
    there is one (3.11+) and a task to cancel: ``wait_for`` runs the awaitable in a task of its own,
    a few tens of microseconds a call, and a call makes three."""
    if _timeout_at is not None and asyncio.current_task() is not None:
        async with _timeout_at(asyncio.get_running_loop().time() + deadline.remaining()):
            return await awaitable
    return await asyncio.wait_for(awaitable, deadline.remaining())


async def _body_bytes(
    response: httpx.Response,
    deadline: _Deadline,
    cap: int,
    *,
    truncate: bool = False,
    provider: OpenAICompatibleProvider | None = None,
    attempt: int = 1,
) -> AsyncIterator[bytes]:
    """The body's chunks, each read within what is left of ``deadline`` (``asyncio.TimeoutError``
    past it) and at most ``cap`` bytes in all (past it: stop if ``truncate``, else ProviderError)."""
    seen = 0
    chunks = response.aiter_bytes().__aiter__()
    while True:
        try:
            chunk = await _within(chunks.__anext__(), deadline)
        except StopAsyncIteration:
            return
        seen += len(chunk)
        if seen > cap:
            if truncate:
                yield chunk[: len(chunk) - (seen - cap)]
                return
            assert provider is not None
            raise provider._too_large(attempt)
        yield chunk


async def _sse_data(raw: AsyncIterator[bytes]) -> AsyncGenerator[str, None]:
    """The ``data`` payloads of a server-sent event stream (multi-line data joined by newlines)."""
    lines: list[str] = []
    pending = b""
    async for chunk in raw:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for rawline in complete:
            line = rawline.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if lines:
                    yield "\n".join(lines)
                    lines = []
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            key, _, value = line.partition(":")
            if key == "data":
                lines.append(value[1:] if value.startswith(" ") else value)
    if pending.strip():
        key, _, value = pending.decode("utf-8", "replace").rstrip("\r").partition(":")
        if key == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)


def _as_chunk(completion: Completion) -> dict[str, Any]:
    """A whole answer in the shape of one stream chunk (with its usage)."""
    return {
        "model": completion.model,
        "usage": completion.usage,
        "choices": [
            {"index": 0, "delta": {"content": completion.text}, "finish_reason": completion.finish_reason}
        ],
    }


def _delta_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    return delta.get("content") or ""


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: int(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _error_detail(text: str) -> str:
    """The server's error message (``{"error": {"message": ...}}``) or the body's start."""
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    except ValueError:
        pass
    return text[:300]


def _json_fields(text: str) -> dict[str, Any]:
    """A JSON-object answer (optionally in a ```json fence) becomes ``fields``, so conditions such
    as ``${classify.type} == "factual"`` work on a real model's structured answer."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        if body.lower().startswith("json"):
            body = body[4:].strip()
    if not (body.startswith("{") and body.endswith("}")):
        return {}
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: the shared counter (real cl100k counts offline), else ~4 chars a token."""
    try:
        from ..context.tokens import count_tokens
    except ImportError:  # pragma: no cover - the text package is optional to this module
        return (len(text) + 3) // 4
    return count_tokens(text)


def _estimated_usage(messages: list[Message], text: str) -> dict[str, int]:
    """Usage when a stream did not report it; ``estimated: 1`` says so."""
    prompt = 3 + sum(3 + estimate_tokens(str(m.get("content") or "")) for m in messages)
    completion = estimate_tokens(text)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "estimated": 1,
    }


# -- YAML kinds ------------------------------------------------------------------------------------

# One list of keys: the declarative provider schema the loader validates documents with.
_CONFIG_KEYS = (
    set(PROVIDER_SCHEMA.subtechniques["openai_compatible"]) if PROVIDER_SCHEMA.subtechniques else set()
)


def provider_from_config(name: str, config: dict[str, Any]) -> Provider:
    """Build a provider from a YAML entry such as ``{kind: vllm, base_url: ..., model: ...}``.

    Only ``openai`` needs a key (``api_key_env``, default ``OPENAI_API_KEY``); local servers get
    none unless ``api_key_env`` names one, so an OpenAI key is never sent to them by accident.
    ``replay`` and ``replay_dir`` are read by the registry, which wraps what this returns.
    """
    kind = str(config.get("kind") or config.get("type") or "openai_compatible")
    unknown = sorted(set(config) - _CONFIG_KEYS)
    if unknown:
        hints = [
            f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, _CONFIG_KEYS, 1)) else k
            for k in unknown
        ]
        raise ConfigError(
            f"provider '{name}' (kind {kind}): unknown key(s) {', '.join(hints)}; "
            f"known: {', '.join(sorted(_CONFIG_KEYS - {'type'}))}"
        )
    base_url = config.get("base_url") or KIND_DEFAULT_BASE_URLS.get(kind)
    if not base_url:
        raise ConfigError(f"provider '{name}' (kind {kind}): base_url is required")
    is_openai = kind == "openai"
    optional: dict[str, Any] = {
        k: config[k]
        for k in (
            "timeout",
            "max_retries",
            "backoff_initial",
            "backoff_max",
            "stream_usage",
            "deadline",
            "max_response_bytes",
        )
        if k in config
    }
    return OpenAICompatibleProvider(
        name,
        str(base_url),
        str(config.get("model") or ""),
        api_key=config.get("api_key"),
        api_key_env=config.get("api_key_env", "OPENAI_API_KEY" if is_openai else None),
        temperature=config.get("temperature"),
        extra_headers=config.get("extra_headers") or config.get("headers"),
        require_api_key=is_openai,
        **optional,
    )
