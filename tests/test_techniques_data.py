"""data.*, external.web_search, the corpus store, and seed-shaped chains of techniques run by hand."""

from __future__ import annotations

import asyncio
import json

import pytest

from sibyl_nb.errors import SibylError
from sibyl_nb.techniques.builtins import external
from sibyl_nb.techniques.registry import get_technique
from sibyl_nb.testing import StandaloneRun, call_technique, make_context
from sibyl_nb.text import corpus


@pytest.fixture(autouse=True)
def _fresh_corpus():
    corpus.reset_corpus()
    yield
    corpus.reset_corpus()


# -- corpus ---------------------------------------------------------------------------------------------------
def test_sample_corpus_collections():
    assert corpus.list_collections() == ["backup", "code", "documents", "internal_docs", "primary", "web"]
    every = corpus.get_documents("*")
    assert 45 <= len(every) <= 70
    assert len({d["id"] for d in every}) == len(every)
    for d in every:
        assert set(d) >= {"id", "title", "text", "source", "collection"}
        assert 2 <= len([s for s in d["text"].split(". ") if s]) <= 6 or len(d["text"]) < 400
    assert all(d.get("url", "").startswith("https://") for d in corpus.get_documents("web"))


def test_add_documents_upserts_and_invalidates_index():
    corpus.add_documents("notes", [{"id": "n1", "text": "Apples are red."}, "Bananas are yellow."])
    assert [d["id"] for d in corpus.get_documents("notes")] == ["n1", "notes-2"]
    assert corpus.search("apples", "notes", "bm25")[0]["id"] == "n1"
    corpus.add_documents("notes", [{"id": "n1", "text": "Cherries are dark."}])
    assert len(corpus.get_documents("notes")) == 2
    assert corpus.search("apples", "notes", "bm25") == []
    assert corpus.search("cherries", "notes", "bm25")[0]["id"] == "n1"
    with pytest.raises(ValueError):
        corpus.add_documents("*", [])


def test_reset_restores_packaged_corpus():
    corpus.add_documents("tmp", ["x y z"])
    corpus.reset_corpus()
    assert "tmp" not in corpus.list_collections()


# -- data.load_documents --------------------------------------------------------------------------------------
def test_load_packaged_markdown_by_default():
    out = call_technique("data.load_documents", {"source": "filesystem_markdown"}, {})
    assert out["count"] == len(out["documents"]) >= 3
    titles = {d["title"] for d in out["documents"]}
    assert {"Python", "Retrieval-augmented generation", "Workflow orchestration"} <= titles
    assert out["source"] == "filesystem_markdown"


def test_load_markdown_from_path_and_json_and_corpus(tmp_path):
    (tmp_path / "a.md").write_text("# Alpha\n\nAlpha text.", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("no heading here", encoding="utf-8")
    md = call_technique("data.load_documents", {"path": str(tmp_path)}, {})
    assert [(d["id"], d["title"]) for d in md["documents"]] == [("a", "Alpha"), ("sub/b", "B")]

    path = tmp_path / "docs.json"
    path.write_text(
        json.dumps({"documents": [{"title": "T", "text": "Body"}, "just text"]}), encoding="utf-8"
    )
    js = call_technique("data.load_documents", {"source": "json", "path": str(path)}, {})
    assert js["count"] == 2 and js["documents"][1]["text"] == "just text"

    web = call_technique("data.load_documents", {"source": "corpus", "collection": "web"}, {})
    assert web["count"] == len(corpus.get_documents("web"))


def test_load_documents_errors_name_the_technique(tmp_path):
    with pytest.raises(SibylError, match="data.load_documents.*does not exist"):
        call_technique("data.load_documents", {"path": str(tmp_path / "missing")}, {})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SibylError, match="could not load json"):
        call_technique("data.load_documents", {"source": "json", "path": str(bad)}, {})
    with pytest.raises(SibylError, match="unknown collection"):
        call_technique("data.load_documents", {"source": "corpus", "collection": "nope"}, {})


# -- the seed's sequential ingestion: load -> chunk -> embed -> store, then search -------------------------------
def test_ingestion_chain_makes_chunks_searchable():
    loaded = call_technique("data.load_documents", {"source": "filesystem_markdown"}, {})
    chunks = call_technique(
        "rag.chunking", {"chunk_size": 60, "chunk_overlap": 10}, {}, upstream={"load_data": loaded}
    )
    embedded = call_technique("rag.embedding", {}, {}, upstream={"chunk": chunks})
    stored = call_technique(
        "data.store_vectors", {"collection": "handbook"}, {}, upstream={"embed": embedded}
    )
    assert stored["stored"] == chunks["count"] == stored["count"] == stored["collection_size"]
    assert stored["collection"] == "handbook"
    assert stored["dim"] == 256
    for mode in ("vector", "hybrid", "bm25"):
        hits = call_technique(
            "rag.search",
            {"collection": "handbook", "subtechnique": mode, "top_k": 3},
            {"query": "How does a cyclic workflow stop looping?"},
        )
        assert hits["documents"][0]["doc_id"] == "workflows", mode
    again = call_technique("data.store_vectors", {"collection": "handbook"}, {}, upstream={"embed": embedded})
    assert again["collection_size"] == stored["collection_size"]  # same ids replace, never duplicate


def test_store_vectors_default_collection_and_embeds_plain_documents():
    docs = [
        {"id": "new-1", "title": "Quokkas", "text": "Quokkas are small marsupials from Western Australia."}
    ]
    out = call_technique("data.store_vectors", {}, {}, upstream={"load": {"documents": docs}})
    assert out["collection"] == "documents" and out["stored"] == out["count"] == 1
    assert out["collection_size"] == len(corpus.get_documents("documents"))
    hits = call_technique("rag.search", {"subtechnique": "vector"}, {"query": "quokkas marsupials"})
    assert hits["documents"][0]["id"] == "new-1"


def test_store_vectors_rejects_mismatched_upstream():
    with pytest.raises(SibylError, match="chunks but"):
        call_technique(
            "data.store_vectors",
            {},
            {},
            upstream={"e": {"chunks": [{"id": "a", "text": "x"}], "embeddings": []}},
        )


# -- external.web_search -------------------------------------------------------------------------------------
def test_offline_web_search_is_labelled_offline():
    out = call_technique("external.web_search", {"max_results": 3}, {"query": "Who created Python?"})
    assert 1 <= out["count"] <= 3 and out["backend"] == "offline" and out["offline"] is True
    assert "offline" in out["note"] and "local" in out["note"]
    assert out["documents"] == out["results"]
    first = out["results"][0]
    assert first["offline"] is True and first["url"].startswith("https://") and first["collection"] == "web"
    assert "Guido" in " ".join(r["text"] for r in out["results"])
    assert get_technique("external.web_search").blocking is False


def test_web_search_uses_upstream_queries():
    up = {"expand": {"queries": ["What is BM25?", "reciprocal rank fusion"]}}
    out = call_technique("external.web_search", {"max_results": 5}, {"query": "x"}, upstream=up)
    ids = [r["id"] for r in out["results"]]
    assert "web-bm25-wikipedia" in ids and "web-rrf-paper" in ids
    assert out["queries"] == up["expand"]["queries"]


def test_custom_backends_sync_and_async():
    seen = []

    def sync_backend(query, max_results, config):
        seen.append((query, max_results))
        return [{"title": "Hit", "url": "https://example.org/1", "snippet": f"about {query}"}]

    async def async_backend(query, max_results, config):
        await asyncio.sleep(0)
        return [{"title": "A", "url": "https://example.org/a", "text": "async hit", "offline": False}]

    external.register_web_search_backend("fake", sync_backend)
    external.register_web_search_backend("fake_async", async_backend)
    try:
        out = call_technique("external.web_search", {"backend": "fake", "max_results": 2}, {"query": "cats"})
        assert seen == [("cats", 2)]
        r = out["results"][0]
        assert r["text"] == "about cats" and r["id"] == "https://example.org/1" and r["source"] == "fake"
        assert out["offline"] is False and out["note"] == ""
        out = call_technique("external.web_search", {"backend": "fake_async"}, {"query": "cats"})
        assert out["results"][0]["text"] == "async hit"
        external.set_default_web_search_backend("fake")
        assert call_technique("external.web_search", {}, {"query": "dogs"})["backend"] == "fake"
    finally:
        external.unregister_web_search_backend("fake")
        external.unregister_web_search_backend("fake_async")
    assert call_technique("external.web_search", {}, {"query": "dogs"})["backend"] == "offline"
    with pytest.raises(SibylError, match="unknown web search backend 'gone'"):
        call_technique("external.web_search", {"backend": "gone"}, {"query": "x"})


# -- seed-shaped flows, one technique call per node ------------------------------------------------------------
def _call(run, name, config, upstream=None):
    ctx = make_context(config, run=run, upstream=upstream or {}, technique=name)
    out = get_technique(name).fn(ctx)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    json.dumps(out)  # every output must be JSON-serialisable (cache / checkpoint)
    run.results[name] = out
    return out


def test_research_dag_by_hand():
    run = StandaloneRun(input={"query": "How does hybrid search work and why use reciprocal rank fusion?"})
    expand = _call(run, "rag.query_processing", {"subtechnique": "expansion", "num_queries": 3})
    docs = _call(run, "rag.search", {"subtechnique": "hybrid", "top_k": 10}, {"expand_query": expand})
    web = _call(run, "external.web_search", {"max_results": 5}, {"expand_query": expand})
    combined = _call(
        run,
        "rag.ranking",
        {"subtechnique": "reciprocal_rank_fusion"},
        {"search_docs": docs, "search_web": web},
    )
    answer = _call(run, "ai_generation.generation", {"provider": "primary"}, {"combine_results": combined})
    check = _call(
        run, "ai_generation.validation", {"subtechnique": "fact_check"}, {"generate_answer": answer}
    )
    assert combined["count"] > 0 and combined["sources"]
    assert "reciprocal rank fusion" in answer["answer"].lower()
    assert check["score"] == 1.0 and check["valid"]


def test_research_workflow_with_decomposition_and_report():
    run = StandaloneRun(
        input={"query": "What is retrieval-augmented generation and how does reranking help?"}
    )
    expand = _call(run, "rag.query_processing", {"subtechnique": "decomposition"})
    assert len(expand["queries"]) == 2
    internal = _call(run, "rag.search", {"collection": "internal_docs"}, {"expand": expand})
    web = _call(run, "external.web_search", {}, {"expand": expand})
    combine = _call(run, "rag.ranking", {}, {"search_internal": internal, "search_external": web})
    analyze = _call(
        run,
        "ai_generation.generation",
        {"prompt": f"Analyze these sources: {combine['sources']}"},
        {"combine": combine},
    )
    report = _call(
        run, "ai_generation.generation", {"prompt": "Create comprehensive report"}, {"analyze": analyze}
    )
    check = _call(run, "ai_generation.validation", {}, {"synthesize": report})
    assert analyze["kind"] == report["kind"] == "answer"
    assert len(report["text"]) >= len(analyze["text"])
    assert check["score"] >= 0.5


def test_conditional_branches_by_classification():
    for query, label in [
        ("What year was Python created?", "factual"),
        ("Is Rust better than Go?", "opinion"),
        ("Write a poem about the sea", "creative"),
    ]:
        run = StandaloneRun(input={"query": query})
        classify = _call(
            run, "ai_generation.generation", {"prompt": "Classify query type: factual, opinion, or creative"}
        )
        assert classify["type"] == label
        if label == "factual":
            assert _call(run, "rag.retrieval", {}, {"classify": classify})["count"] > 0
        elif label == "opinion":
            assert _call(run, "ai_generation.consensus", {}, {"classify": classify})["answer"]
        else:
            poem = _call(run, "ai_generation.generation", {"temperature": 1.2}, {"classify": classify})
            assert "sea" in poem["text"]


def test_error_handling_collections_exist():
    run = StandaloneRun(input={"query": "What is Python?"})
    assert _call(run, "rag.search", {"collection": "primary"})["count"] > 0
    assert _call(run, "rag.search", {"collection": "backup"})["count"] > 0
    assert (
        _call(run, "ai_generation.generation", {"provider": "fallback", "temperature": 0.3})["provider"]
        == "fallback"
    )


def test_all_builtin_outputs_are_json_serialisable():
    run = StandaloneRun(input={"query": "What is Python used for?"})
    retrieved = _call(run, "rag.retrieval", {})
    _call(run, "rag.reranking", {"subtechnique": "mmr"}, {"retrieve": retrieved})
    _call(run, "rag.reranking", {"subtechnique": "llm"}, {"retrieve": retrieved})
    _call(run, "rag.chunking", {}, {"retrieve": retrieved})
    _call(run, "ai_generation.consensus", {})
