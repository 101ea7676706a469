"""The built-in searches never hold up the event loop, so the demo's two searches really overlap."""

from __future__ import annotations

import asyncio
import time

import pytest
from seed_examples import block

import sibyl_nb as sb
from sibyl_nb.techniques.builtins import external
from sibyl_nb.text import corpus

QUESTION = {"query": "What is Python used for in machine learning and data science?"}


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def cold_corpus():
    corpus.reset_corpus()  # indexes are rebuilt on the next search
    yield
    corpus.reset_corpus()


@pytest.fixture
def search_threads(monkeypatch):
    """Where each corpus search (index build included) ran: on the event loop's thread or not."""
    seen = []
    real = corpus.search

    def spy(*args, **kwargs):
        seen.append(_on_event_loop())
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus, "search", spy)
    return seen


@pytest.mark.parametrize("technique", ["rag.search", "rag.retrieval"])
def test_corpus_searches_run_off_the_event_loop(technique, search_threads, cold_corpus):
    r = sb.Pipeline.from_dict({"steps": [{"use": technique, "id": "s"}]}).run(QUESTION)
    assert r.outputs["s"]["count"] > 0
    assert search_threads and not any(search_threads)


def test_offline_web_search_runs_off_the_event_loop(search_threads):
    r = sb.Pipeline.from_dict({"steps": [{"use": "external.web_search", "id": "w"}]}).run(QUESTION)
    assert r.outputs["w"]["count"] > 0
    assert search_threads and not any(search_threads)


@pytest.fixture
def slow_web_backend():
    """A sync backend that waits 150 ms per query, as an HTTP client would."""

    def slow(query, max_results, config):
        time.sleep(0.15)
        return external.offline_backend(query, max_results, config)

    external.register_web_search_backend("slow_test", slow, default=True)
    yield
    external.set_default_web_search_backend("offline")
    external.unregister_web_search_backend("slow_test")


def test_research_workflow_searches_overlap_with_a_blocking_web_backend(slow_web_backend, cold_corpus):
    # cold: rag.search builds its index (tens of ms) while the web backend waits on "the network"
    r = sb.Pipeline.from_yaml(block("Research Workflow"), name="research_workflow").run(QUESTION)
    internal, web = r.record("search_internal"), r.record("search_external")
    assert web.duration >= 0.15 * len(r.outputs["expand"]["queries"]) - 0.01
    assert internal.started < web.ended and web.started < internal.ended  # they overlap:
    assert web.started < internal.ended < web.ended  # the index was built while the web call waited
    assert r.outputs["search_external"]["backend"] == "slow_test"
