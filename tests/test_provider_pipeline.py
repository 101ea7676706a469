"""Named providers configured in YAML, through the engine: a real loopback server as `primary`."""

from __future__ import annotations

import pytest
from openai_stub_server import DEFAULT_USAGE, AutoReply, StatusReply, StubServer
from seed_examples import block

import sibyl_nb as sb


def with_providers(yaml_text: str, primary_url: str) -> str:
    providers = (
        "providers:\n  primary:\n    kind: openai_compatible\n"
        f"    base_url: {primary_url}\n    model: stub-model\n    max_retries: 0\n    timeout: 2\n"
    )
    return providers + yaml_text


def test_primary_provider_answers_and_usage_lands_in_the_step_record():
    with StubServer(default=AutoReply("Python is a programming language used for data science.")) as server:
        pipe = sb.Pipeline.from_yaml(
            with_providers(
                "steps:\n  - use: ai_generation.generation\n    config:\n      provider: primary\n",
                server.url,
            )
        )
        r = pipe.run({"query": "What is Python?"})
        assert r.output["answer"].startswith("Python is a programming language")
        assert r.output["provider"] == "primary"
        assert r.record("generation").usage == DEFAULT_USAGE
        assert r.trace()["tokens"].tolist() == [DEFAULT_USAGE["total_tokens"]]
        sent = server.bodies[0]
        assert sent["model"] == "stub-model" and sent["messages"][-1]["content"].endswith("What is Python?")


def test_seed_error_handling_falls_back_when_primary_is_down():
    """The seed's `generate` (retry 3, exponential) then `simple_generate` with `provider: fallback`."""
    events: list = []
    with StubServer(default=StatusReply(503, body={"error": {"message": "overloaded"}})) as server:
        pipe = sb.Pipeline.from_yaml(with_providers(block("Error Handling Orchestration"), server.url))
        r = pipe.run({"query": "What is Python used for?"}, observers=[events.append])
        assert len(server.bodies) == 3  # one request per attempt of `generate`
    rec = r.record("generate")
    assert rec.status == "failed" and rec.attempts == 3 and "503" in rec.error
    assert r.record("simple_generate").fallback_for == "generate"
    assert r.output["provider"] == "fallback" and "python" in r.output["answer"].lower()
    delays = [e.data["delay"] for e in events if e.kind == "node_retrying"]
    assert delays == pytest.approx([0.1, 0.2])
