"""The OpenAI-compatible provider and ``pipe.stream`` against LiteLLM's proxy: a real server that
nobody here wrote (tests/litellm_server.py starts it on loopback with mock responses), beside the
scripted stub (tests/openai_stub_server.py): success, streaming, usage fields, error statuses."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from litellm_server import LiteLLMProxy, litellm_available
from openai_stub_server import AutoReply, StubServer

import sibyl_nb as sb
from sibyl_nb.errors import NodeExecutionError, ProviderError
from sibyl_nb.providers.openai_compat import OpenAICompatibleProvider

ANSWER = "Python is used for web development, data science, scripting and automation."
MESSAGES = [{"role": "user", "content": "What is Python used for?"}]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxy() -> Iterator[LiteLLMProxy]:
    if not litellm_available():
        if os.environ.get("SIBYL_REQUIRE_SERVICES") == "1":
            pytest.fail("litellm[proxy] is not installed (it is in the test extra)")
        pytest.skip("litellm[proxy] is not installed")
    with LiteLLMProxy({"mock-gpt": ANSWER, "mock-limited": "litellm.RateLimitError"}) as server:
        yield server


def _provider(proxy: LiteLLMProxy, model: str = "mock-gpt", **kw: Any) -> OpenAICompatibleProvider:
    opts: dict[str, Any] = {
        "api_key": proxy.key,
        "api_key_env": None,
        "timeout": 20.0,
        "backoff_initial": 0.01,
    }
    opts.update(kw)
    return OpenAICompatibleProvider("primary", proxy.base_url, model, **opts)


def _run(provider: OpenAICompatibleProvider, coro_fn: Any) -> Any:
    async def main() -> Any:
        try:
            return await coro_fn()
        finally:
            await provider.aclose()

    return asyncio.run(main())


def test_success_returns_the_servers_text_model_and_usage(proxy: LiteLLMProxy) -> None:
    provider = _provider(proxy)
    out = _run(provider, lambda: provider.complete(MESSAGES, max_tokens=64))
    assert out.text == ANSWER
    assert out.model == "mock-gpt"
    assert out.finish_reason == "stop"
    usage = out.usage
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "estimated" not in usage  # the server reported it


def test_streaming_deltas_concatenate_to_the_answer_with_reported_usage(proxy: LiteLLMProxy) -> None:
    provider = _provider(proxy)
    deltas: list[str] = []
    out = _run(provider, lambda: provider.complete(MESSAGES, on_token=deltas.append))
    assert len(deltas) > 5  # really streamed, in pieces
    assert "".join(deltas) == ANSWER == out.text
    assert out.usage["completion_tokens"] > 0 and "estimated" not in out.usage
    assert out.usage["total_tokens"] == out.usage["prompt_tokens"] + out.usage["completion_tokens"]


def test_error_status_429_is_retried_then_reported(proxy: LiteLLMProxy) -> None:
    provider = _provider(proxy, "mock-limited", max_retries=1, backoff_max=0.05)
    with pytest.raises(ProviderError) as info:
        _run(provider, lambda: provider.complete(MESSAGES))
    text = str(info.value)
    assert "429" in text and "attempt 2" in text and proxy.base_url in text


@pytest.mark.parametrize(
    ("model", "key"),
    [("no-such-model", None), ("mock-gpt", "sk-wrong-key")],
    ids=["unknown-model", "wrong-key"],
)
def test_a_client_error_status_fails_at_once_without_retries(
    proxy: LiteLLMProxy, model: str, key: str | None
) -> None:
    provider = _provider(proxy, model, api_key=key or proxy.key, max_retries=3)
    with pytest.raises(ProviderError) as info:
        _run(provider, lambda: provider.complete(MESSAGES))
    text = str(info.value)
    # LiteLLM answers 400 for both (a wrong key is "No connected db" without a key database)
    assert "HTTP 400" in text and "(attempt 1/4)" in text
    assert "sk-wrong-key" not in text and proxy.key not in text


def _doc(base_url: str, model: str, key_env: str) -> str:
    return f"""
providers:
  primary: {{kind: openai_compatible, base_url: "{base_url}", model: {model}, api_key_env: {key_env},
            timeout: 20, max_retries: 0}}
pipelines:
  answer:
    steps:
      - name: retrieve
        use: rag.search
        config: {{top_k: 2}}
      - name: respond
        use: ai_generation.generation
        config: {{prompt: "Answer briefly."}}
"""


def _load(base_url: str, model: str, key_env: str) -> sb.Pipeline:
    # api_key_env chooses which environment variable is sent: only a trusted document may (issue 10)
    return sb.Pipeline.from_yaml(_doc(base_url, model, key_env), trust_code=True)


def _events(pipe: sb.Pipeline, inputs: dict[str, Any]) -> list[Any]:
    return list(pipe.stream_sync(inputs))


@pytest.mark.parametrize("server_kind", ["litellm", "stub"])
def test_pipe_stream_token_events_concatenate_to_the_final_text(
    server_kind: str, proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIBYL_TEST_KEY", proxy.key)
    if server_kind == "litellm":
        events = _events(
            _load(proxy.base_url, "mock-gpt", "SIBYL_TEST_KEY"),
            {"query": "What is Python used for?"},
        )
    else:
        with StubServer(AutoReply(ANSWER)) as stub:
            events = _events(
                _load(stub.url, "stub-model", "SIBYL_TEST_KEY"),
                {"query": "What is Python used for?"},
            )
            assert stub.requests[-1].body["stream"] is True
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    tokens = [e for e in events if e.kind == "token"]
    assert len(tokens) > 3 and {e.node_id for e in tokens} == {"respond"}
    result = events[-1].data["result"]
    assert "".join(e.data["delta"] for e in tokens) == result.output["text"] == ANSWER
    # tokens arrive between the node's start and finish
    start = next(i for i, e in enumerate(events) if e.kind == "node_started" and e.node_id == "respond")
    end = next(i for i, e in enumerate(events) if e.kind == "node_finished" and e.node_id == "respond")
    assert all(start < events.index(t) < end for t in tokens)


def test_a_run_nobody_streams_sends_a_plain_request(
    proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIBYL_TEST_KEY", proxy.key)
    with StubServer(AutoReply(ANSWER)) as stub:
        result = _load(stub.url, "stub-model", "SIBYL_TEST_KEY").run({"query": "q?"})
        assert stub.requests[-1].body.get("stream") is not True
    assert result.output["text"] == ANSWER


def test_a_provider_error_in_a_stream_yields_run_failed_then_raises(
    proxy: LiteLLMProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIBYL_TEST_KEY", proxy.key)
    pipe = _load(proxy.base_url, "mock-limited", "SIBYL_TEST_KEY")
    seen: list[str] = []
    with pytest.raises(NodeExecutionError, match=r"respond.*429"):
        for ev in pipe.stream_sync({"query": "q?"}):
            seen.append(ev.kind)
    assert seen[-1] == "run_failed" and "node_failed" in seen
