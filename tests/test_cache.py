"""Step cache: the seed's research workflow served from cache on its second run (all ``cached``,
>= 50x faster with a 100 ms generation step), ttl expiry, fingerprints, clearing, opt-outs, Redis."""

from __future__ import annotations

import asyncio
import inspect
import time

import pytest
from seed_examples import block

import sibyl_nb as sb
from sibyl_nb.state.cache import fingerprint
from sibyl_nb.techniques import registry

CACHING = """
shops:
  infrastructure:
    config:
      caching:
        enabled: true
        ttl: {ttl}
        cache_key_template: "workflow:${{workflow_id}}:${{step_name}}"
"""

GENERATION = "ai_generation.generation"


@pytest.fixture
def slow_generation():
    """Re-register the built-in generation technique with a 100 ms sleep in front (restored after)."""
    original = registry.get_technique(GENERATION)
    calls = []

    async def slow(ctx):
        calls.append(ctx.node_id)
        await asyncio.sleep(0.1)
        out = original.fn(ctx)
        return await out if inspect.isawaitable(out) else out

    registry.register_technique(
        GENERATION,
        slow,
        subtechniques=original.subtechniques,
        config_schema=original.config_schema,
        outputs=original.outputs,
    )
    try:
        yield calls
    finally:
        registry._REGISTRY[GENERATION] = original


def research(ttl: float = 3600) -> sb.Pipeline:
    return sb.Pipeline.from_yaml(block("Research Workflow") + CACHING.format(ttl=ttl))


QUERY = {"query": "What is Python used for?"}


def test_second_run_of_the_seed_research_workflow_is_all_cached_and_calls_nothing(slow_generation):
    pipe = research()
    t0 = time.perf_counter()
    first = pipe.run(QUERY)
    cold = time.perf_counter() - t0
    assert {r.status for r in first.records} == {"ran"}
    assert slow_generation == ["analyze", "synthesize"]
    slow_generation.clear()
    t0 = time.perf_counter()
    second = pipe.run(QUERY)
    warm = time.perf_counter() - t0
    assert [r.status for r in second.records] == ["cached"] * 7
    assert slow_generation == []
    assert second.output == first.output and second.outputs == first.outputs
    # speed is the benchmarks' business; here only: the cached run waits for no generation (100 ms each)
    assert warm < 0.1 < 0.2 <= cold, f"cold {cold * 1000:.1f} ms vs cached {warm * 1000:.2f} ms"
    assert "⚡" in second.format_trace()


def test_ttl_expiry_re_runs(slow_generation):
    pipe = research(ttl=0.4)
    pipe.run(QUERY)
    assert {r.status for r in pipe.run(QUERY).records} == {"cached"}
    time.sleep(0.5)
    slow_generation.clear()
    third = pipe.run(QUERY)
    assert {r.status for r in third.records} == {"ran"}
    assert slow_generation == ["analyze", "synthesize"]


def test_a_different_input_or_workflow_id_misses():
    pipe = research()
    pipe.run(QUERY)
    other = pipe.run({"query": "How does retrieval augmented generation work?"})
    assert {r.status for r in other.records} == {"ran"}
    by_id = pipe.run(QUERY, workflow_id="research-42")  # ${workflow_id} is in the key template
    assert {r.status for r in by_id.records} == {"ran"}
    assert {r.status for r in pipe.run(QUERY, workflow_id="research-42").records} == {"cached"}


def test_clear_cache():
    pipe = research()
    pipe.run(QUERY)
    assert pipe.clear_cache() == 7
    assert {r.status for r in pipe.run(QUERY).records} == {"ran"}
    assert pipe.clear_cache(all_pipelines=True) == 7
    assert pipe.clear_cache() == 0


CALLS: list[str] = []


@sb.technique("cache.count", blocking=False)
def _count(ctx):
    CALLS.append(ctx.node_id)
    return {"n": len(ctx.config.get("text", "")), "text": ctx.config.get("text", "")}


@sb.technique("cache.weird", blocking=False)
def _weird(ctx):
    CALLS.append(ctx.node_id)
    return {"s": {1, 2}}  # not JSON: never cached


def small(extra: str = "", caching: str = "{enabled: true}") -> sb.Pipeline:
    return sb.Pipeline.from_yaml(f"""
steps:
  - {{use: cache.count, id: a, config: {{text: "${{query}}"}}}}
  - {{use: cache.count, id: b, cache: false}}
  - {{use: workflow_orchestration.passthrough, id: c}}
{extra}
shops:
  infrastructure:
    config:
      caching: {caching}
""")


def test_opt_outs_and_non_json_outputs():
    CALLS.clear()
    pipe = small("  - {use: cache.weird, id: w}")
    pipe.run({"query": "x"})
    second = pipe.run({"query": "x"})
    assert [(r.node_id, r.status) for r in second.records] == [
        ("a", "cached"),
        ("b", "ran"),
        ("c", "ran"),
        ("w", "ran"),
    ]
    assert CALLS == ["a", "b", "w", "b", "w"]


def test_rendered_config_is_part_of_the_fingerprint():
    CALLS.clear()
    pipe = small()
    pipe.run({"query": "x"})
    pipe.run({"query": "yy"})
    assert CALLS.count("a") == 2
    assert fingerprint("t", {"a": 1}, {}, {}) != fingerprint("t", {"a": 2}, {}, {})
    assert fingerprint("t", {"a": 1, "b": 2}, {}, {}) == fingerprint("t", {"b": 2, "a": 1}, {}, {})


def test_enabled_false_and_configure():
    CALLS.clear()
    pipe = small(caching="{enabled: false}")
    pipe.run({"query": "x"})
    pipe.run({"query": "x"})
    assert CALLS.count("a") == 2
    pipe.configure(caching={"ttl": 60, "storage": "memory"})
    pipe.run({"query": "x"})
    assert pipe.run({"query": "x"}).status("a") == "cached"


def test_cached_values_are_json_on_disk():
    pipe = small()
    pipe.run({"query": "x"})
    from sibyl_nb.state.cache import open_cache_store

    store = open_cache_store({})
    keys = store.kv_keys("workflow:pipeline:a#")
    assert len(keys) == 1
    entry = store.kv_get(keys[0])
    assert entry["output"] == {"n": 1, "text": "x"} and entry["pipeline"] == "pipeline"
    raw = store._cache._sql("SELECT value FROM Cache WHERE key = ?", ("k:" + keys[0],)).fetchone()[0]
    assert raw.startswith("{")  # JSON text, not a pickle


@pytest.mark.redis
def test_redis_backend(redis_url, unique):
    CALLS.clear()
    pipe = small(caching=f'{{enabled: true, storage: redis, redis_url: "{redis_url}", ttl: 30}}')
    pipe.run({"query": unique})
    assert pipe.run({"query": unique}).status("a") == "cached"
    assert CALLS.count("a") == 1
    assert pipe.clear_cache() >= 1
