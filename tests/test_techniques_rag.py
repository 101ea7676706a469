"""rag.* techniques: query processing, search, retrieval, ranking, reranking, chunking, embedding."""

from __future__ import annotations

import asyncio
import math

import pytest

from sibyl_nb.document.schema import ConfigSchema
from sibyl_nb.errors import SibylError
from sibyl_nb.providers.base import Completion
from sibyl_nb.techniques.registry import get_technique
from sibyl_nb.testing import StandaloneRun, call_technique, make_context
from sibyl_nb.text import corpus
from sibyl_nb.text.ranking import reciprocal_rank_fusion
from sibyl_nb.text.tokenize import normalise


@pytest.fixture(autouse=True)
def _fresh_corpus():
    corpus.reset_corpus()
    yield
    corpus.reset_corpus()


def _doc(i: str, text: str = "", title: str = "") -> dict:
    return {"id": i, "title": title or i, "text": text or f"text of {i}", "source": "test", "collection": "t"}


# -- registration ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,subs",
    [
        ("rag.query_processing", {"expansion", "decomposition", "rewriting"}),
        ("rag.search", {"keyword", "bm25", "semantic", "vector", "hybrid"}),
        ("rag.ranking", {"reciprocal_rank_fusion", "score", "weighted"}),
        ("rag.reranking", {"lexical", "llm", "mmr"}),
    ],
)
def test_registered_with_subtechniques(name, subs):
    info = get_technique(name)
    assert set(info.subtechniques) == subs
    assert info.blocking is False
    assert info.outputs


def test_every_rag_technique_declares_outputs_and_schema():
    for name in (
        "rag.search",
        "rag.retrieval",
        "rag.ranking",
        "rag.reranking",
        "rag.chunking",
        "rag.embedding",
    ):
        info = get_technique(name)
        assert "count" in info.outputs
        assert isinstance(info.config_schema, ConfigSchema) and info.config_schema.closed
        assert info.config_schema.fields
    assert "count" in get_technique("rag.retrieval").outputs
    assert {"query", "queries"} <= set(get_technique("rag.query_processing").outputs)


# -- query processing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 5, 12])
def test_expansion_yields_num_queries_distinct_queries(n):
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "expansion", "num_queries": n},
        {"query": "What is Python used for?"},
    )
    assert len(out["queries"]) == n
    assert len({normalise(q) for q in out["queries"]}) == n
    assert out["queries"][0] == "What is Python used for?"
    assert out["expansions"] == out["queries"][1:]
    assert out["subtechnique"] == "expansion"


def test_expansion_uses_thesaurus_acronyms_and_keywords():
    out = call_technique("rag.query_processing", {"num_queries": 6}, {"query": "How does RAG work?"})
    qs = out["queries"]
    assert any("retrieval-augmented generation" in q for q in qs)  # acronym expanded
    assert any("function" in q or "operate" in q for q in qs)  # thesaurus synonym of "work"
    assert "RAG work" in qs  # keyword-only form


def test_expansion_is_deterministic():
    a = call_technique("rag.query_processing", {"num_queries": 5}, {"query": "best python libraries"})
    b = call_technique("rag.query_processing", {"num_queries": 5}, {"query": "best python libraries"})
    assert a == b


def test_decomposition_splits_and_resolves_pronouns():
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "decomposition"},
        {"query": "What is Python and who created it?"},
    )
    assert out["queries"] == ["What is Python?", "Who created Python?"]
    compare = call_technique(
        "rag.query_processing", {"subtechnique": "decomposition"}, {"query": "Compare BM25 and vector search"}
    )
    assert compare["queries"][:2] == ["What is BM25?", "What is vector search?"]
    single = call_technique(
        "rag.query_processing", {"subtechnique": "decomposition"}, {"query": "What is Python?"}
    )
    assert single["queries"] == ["What is Python?"]


HISTORY = [
    {"role": "user", "content": "What is Python?"},
    {"role": "assistant", "content": "Python is a high-level programming language."},
]


def test_rewriting_resolves_follow_up_and_sets_session_query():
    info = get_technique("rag.query_processing")
    ctx = make_context({"subtechnique": "rewriting", "context": HISTORY}, {"message": "What's it used for?"})
    out = info.fn(ctx)
    assert out["query"] == "What is Python used for?"
    assert out["original"] == "What's it used for?"
    assert out["rewritten"] is True
    assert ctx.session["query"] == "What is Python used for?"
    assert ctx.query == "What is Python used for?"  # later steps answer the rewritten question


@pytest.mark.parametrize(
    "context",
    [
        '[{"role": "user", "content": "What is Python?"}]',  # a JSON string (template rendered to text)
        "[{'role': 'user', 'content': 'What is Python?'}]",  # a Python repr
        "user: What is Python?\nassistant: Python is a language.",  # role-prefixed lines
    ],
)
def test_rewriting_accepts_string_context(context):
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "rewriting", "context": context},
        {"message": "Who created it?"},
    )
    assert out["query"] == "Who created Python?"


def test_rewriting_falls_back_to_session_history_including_current_message():
    history = HISTORY + [{"role": "user", "content": "What's it used for?"}]
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "rewriting", "context": ""},
        {"message": "What's it used for?"},
        session={"conversation_history": history},
    )
    assert "Python" in out["query"]


def test_rewriting_leaves_standalone_questions_alone():
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "rewriting", "context": HISTORY},
        {"message": "What is Rust?"},
    )
    assert out["query"] == "What is Rust?"
    assert out["rewritten"] is False


def test_rewriting_ellipsis_reuses_previous_question():
    history = [{"role": "user", "content": "What is Python used for?"}]
    out = call_technique(
        "rag.query_processing",
        {"subtechnique": "rewriting", "context": history},
        {"message": "What about Java?"},
    )
    assert out["query"] == "What is Java used for?"


# -- search -------------------------------------------------------------------------------------------------
def test_hybrid_search_returns_python_docs_for_python_question():
    out = call_technique(
        "rag.search", {"subtechnique": "hybrid", "top_k": 5}, {"query": "What is Python used for?"}
    )
    assert out["count"] == len(out["documents"]) == 5
    assert out["collection"] == "documents"
    top = out["documents"][:3]
    assert all("python" in (d["title"] + d["text"]).lower() for d in top)
    assert "doc-python-uses" in [d["id"] for d in top]
    assert [d["score"] for d in out["documents"]] == sorted(
        (d["score"] for d in out["documents"]), reverse=True
    )


@pytest.mark.parametrize("mode", ["keyword", "bm25", "semantic", "vector", "hybrid"])
def test_every_search_mode_finds_matching_documents(mode):
    out = call_technique(
        "rag.search", {"subtechnique": mode, "top_k": 3}, {"query": "reciprocal rank fusion"}
    )
    assert out["count"] >= 1
    assert out["subtechnique"] == mode
    assert "doc-hybrid-search" in [d["id"] for d in out["documents"]]
    for d in out["documents"]:
        assert set(d) >= {"id", "title", "text", "source", "collection", "score"}


def test_search_uses_upstream_queries_and_collection():
    upstream = {"expand": {"queries": ["Who created Python?", "Python creator"]}}
    out = call_technique(
        "rag.search", {"collection": "internal_docs"}, {"query": "ignored"}, upstream=upstream
    )
    assert out["queries"] == ["Who created Python?", "Python creator"]
    assert all(d["collection"] == "internal_docs" for d in out["documents"])


def test_search_with_no_matching_terms_returns_nothing():
    out = call_technique("rag.search", {}, {"query": "zebra migration"})
    assert out["documents"] == [] and out["count"] == 0


def test_unknown_collection_error_names_technique_and_known_collections():
    with pytest.raises(SibylError) as err:
        call_technique("rag.search", {"collection": "nope"}, {"query": "Python"})
    msg = str(err.value)
    assert "rag.search" in msg and "'nope'" in msg
    for name in ("documents", "internal_docs", "code", "primary", "backup", "web"):
        assert name in msg


def test_user_added_collection_is_searchable():
    corpus.add_documents(
        "faq", [{"id": "faq-1", "title": "Refunds", "text": "Refunds take five business days."}]
    )
    assert "faq" in corpus.list_collections()
    out = call_technique(
        "rag.search", {"collection": "faq", "subtechnique": "bm25"}, {"query": "How long do refunds take?"}
    )
    assert [d["id"] for d in out["documents"]] == ["faq-1"]


# -- retrieval ----------------------------------------------------------------------------------------------
def test_retrieval_count_reflects_corpus_knowledge():
    broad = call_technique("rag.retrieval", {}, {"query": "What is Python?"})
    assert broad["count"] > 5  # the seed's "${retrieve.count} > 5" rerank branch
    narrow = call_technique("rag.retrieval", {}, {"query": "zebra migration"})
    assert narrow["count"] < 3  # the "${retrieve.count} < 3" expansion branch
    limited = call_technique("rag.retrieval", {"top_k": 2}, {"query": "What is Python?"})
    assert limited["count"] == 2
    assert set(broad) >= {"documents", "count", "query"}


def test_retrieval_uses_rewritten_session_query():
    out = call_technique(
        "rag.retrieval",
        {"top_k": 3},
        {"message": "What's it used for?"},
        session={"query": "What is Python used for?"},
    )
    assert out["query"] == "What is Python used for?"
    assert out["documents"][0]["id"] == "doc-python-uses"


# -- ranking ------------------------------------------------------------------------------------------------
def test_rrf_known_answer():
    a = [_doc("a"), _doc("b"), _doc("c")]
    b = [_doc("b"), _doc("c"), _doc("d")]
    out = call_technique(
        "rag.ranking",
        {"subtechnique": "reciprocal_rank_fusion"},
        {"query": "q"},
        upstream={"one": {"documents": a}, "two": {"documents": b}},
    )
    assert [d["id"] for d in out["documents"]] == ["b", "c", "a", "d"]
    expected = {"a": 1 / 61, "b": 1 / 62 + 1 / 61, "c": 1 / 63 + 1 / 62, "d": 1 / 63}
    for d in out["documents"]:
        assert math.isclose(d["score"], expected[d["id"]], abs_tol=1e-6)
    assert out["count"] == 4
    assert out["sources"][0] == "b (test)"
    assert out["inputs"] == ["one", "two"]


def test_rrf_function_records_ranks_and_custom_k():
    fused = reciprocal_rank_fusion([[_doc("x"), _doc("y")], [_doc("y")]], k=1)
    assert [d["id"] for d in fused] == ["y", "x"]
    assert fused[0]["ranks"] == [2, 1] and fused[1]["ranks"] == [1, None]
    assert math.isclose(fused[0]["score"], 1 / 3 + 1 / 2, abs_tol=1e-6)


def test_ranking_dedupes_and_formats_web_sources():
    web = {"id": "w1", "title": "Page", "text": "t", "url": "https://example.org/p", "source": "web"}
    out = call_technique(
        "rag.ranking",
        {},
        {"query": "q"},
        upstream={"s": {"documents": [_doc("a"), _doc("a")]}, "w": {"documents": [web]}},
    )
    assert [d["id"] for d in out["documents"]] == ["a", "w1"]
    assert out["sources"][1] == "Page (https://example.org/p)"


def test_weighted_ranking_follows_weights():
    up = {"one": {"documents": [_doc("a"), _doc("b")]}, "two": {"documents": [_doc("b"), _doc("a")]}}
    out = call_technique(
        "rag.ranking", {"subtechnique": "weighted", "weights": {"two": 3.0}}, {"query": "q"}, upstream=up
    )
    assert [d["id"] for d in out["documents"]] == ["b", "a"]
    out = call_technique(
        "rag.ranking", {"subtechnique": "weighted", "weights": [3.0, 1.0]}, {"query": "q"}, upstream=up
    )
    assert [d["id"] for d in out["documents"]] == ["a", "b"]


def test_score_ranking_normalises_each_list():
    one = [dict(_doc("a"), score=10.0), dict(_doc("b"), score=0.0)]
    two = [dict(_doc("b"), score=0.9), dict(_doc("c"), score=0.1)]
    out = call_technique(
        "rag.ranking",
        {"subtechnique": "score"},
        {"query": "q"},
        upstream={"one": {"documents": one}, "two": {"documents": two}},
    )
    scores = {d["id"]: d["score"] for d in out["documents"]}
    assert scores == {"a": 1.0, "b": 1.0, "c": 0.0}


def test_ranking_without_documents_is_empty():
    out = call_technique("rag.ranking", {}, {"query": "q"})
    assert out == {
        "documents": [],
        "sources": [],
        "count": 0,
        "subtechnique": "reciprocal_rank_fusion",
        "inputs": [],
    }


# -- reranking ----------------------------------------------------------------------------------------------
def _candidates():
    return [
        _doc("noise", "Java programs compile to bytecode that runs on the Java Virtual Machine.", "Java"),
        _doc("target", "Guido van Rossum created Python and released it in 1991.", "Python history"),
        _doc("partial", "Python is popular for scripting.", "Scripting"),
    ]


def test_lexical_rerank_puts_the_answering_document_first():
    out = call_technique(
        "rag.reranking",
        {"top_k": 2},
        {"query": "Who created Python?"},
        upstream={"retrieve": {"documents": _candidates()}},
    )
    assert [d["id"] for d in out["documents"]] == ["target", "partial"]
    assert out["count"] == 2
    assert 0 <= out["documents"][1]["score"] <= out["documents"][0]["score"] <= 1


def test_llm_rerank_orders_by_provider_scores():
    class Judge:
        name = "judge"

        async def complete(self, messages, **params):
            text = messages[-1]["content"]
            score = 9 if "Guido" in text else (5 if "scripting" in text else 1)
            return Completion(text=f"Score: {score}/10")

    run = StandaloneRun(input={"query": "Who created Python?"}, providers={"judge": Judge()})
    ctx = make_context(
        {"subtechnique": "llm", "provider": "judge"}, run=run, upstream={"r": {"documents": _candidates()}}
    )
    out = asyncio.run(get_technique("rag.reranking").fn(ctx))
    assert [d["id"] for d in out["documents"]] == ["target", "partial", "noise"]
    assert [d["score"] for d in out["documents"]] == [9, 5, 1]


def test_llm_rerank_with_local_provider_prefers_relevant_document():
    out = call_technique(
        "rag.reranking",
        {"subtechnique": "llm"},
        {"query": "Who created Python?"},
        upstream={"r": {"documents": _candidates()}},
    )
    assert out["documents"][0]["id"] == "target"
    assert out["documents"][-1]["id"] == "noise"


def test_mmr_prefers_diversity():
    docs = [
        _doc("p1", "Python is used for web development and data science."),
        _doc("p2", "Python is used for web development and data science work."),
        _doc("p3", "Python is used for automation and scripting tasks."),
    ]
    out = call_technique(
        "rag.reranking",
        {"subtechnique": "mmr", "top_k": 2, "lambda": 0.5},
        {"query": "What is Python used for?"},
        upstream={"r": {"documents": docs}},
    )
    ids = [d["id"] for d in out["documents"]]
    assert len(ids) == 2 and "p3" in ids


def test_reranking_without_upstream_retrieves_itself():
    out = call_technique("rag.reranking", {}, {"query": "What is BM25?"})
    assert out["documents"][0]["id"] in {"doc-bm25", "doc-hybrid-search"}


# -- chunking / embedding -----------------------------------------------------------------------------------
LONG = " ".join(f"Sentence number {i} talks about topic {i} in some detail." for i in range(1, 21))


def test_chunking_respects_size_and_overlap():
    out = call_technique(
        "rag.chunking",
        {"chunk_size": 30, "chunk_overlap": 10},
        {},
        upstream={"load": {"documents": [_doc("long", LONG)]}},
    )
    chunks = out["chunks"]
    assert out["count"] == len(chunks) > 1
    assert all(c["n_words"] <= 30 for c in chunks)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        last = prev["text"].split(". ")[-1]
        assert nxt["text"].startswith(last.rstrip(".")) or nxt["text"].startswith(last)  # overlap carried
    covered = " ".join(c["text"] for c in chunks)
    for i in range(1, 21):
        assert f"Sentence number {i} " in covered
    assert chunks[0]["id"] == "long#chunk-1" and chunks[0]["doc_id"] == "long"


def test_chunking_splits_markdown_sections_and_titles_chunks():
    md = "# Guide\n\n## Install\n\nRun pip install.\n\n## Use\n\nImport the package."
    out = call_technique("rag.chunking", {}, {}, upstream={"l": {"documents": [_doc("g", md, "Guide")]}})
    assert [c["title"] for c in out["chunks"]] == ["Guide - Install", "Guide - Use"]


def test_chunking_rejects_overlap_not_smaller_than_size():
    with pytest.raises(SibylError, match="chunk_overlap"):
        call_technique("rag.chunking", {"chunk_size": 10, "chunk_overlap": 10}, {})


def test_chunking_input_text_fallback():
    out = call_technique("rag.chunking", {"chunk_size": 12, "chunk_overlap": 0}, {"text": LONG})
    assert out["count"] >= 10


def test_embedding_is_unit_length_deterministic_and_semantic():
    docs = [
        _doc("a", "Python is used for data science."),
        _doc("b", "Python is used for data analysis."),
        _doc("c", "Rust prevents data races with ownership."),
    ]
    out = call_technique("rag.embedding", {"dim": 64}, {}, upstream={"chunk": {"chunks": docs}})
    assert out["dim"] == 64 and out["count"] == 3 and len(out["chunks"]) == 3
    vecs = out["embeddings"]
    assert all(len(v) == 64 for v in vecs)
    assert all(math.isclose(sum(x * x for x in v), 1.0, abs_tol=1e-4) for v in vecs)

    def cos(u, v):
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2])
    again = call_technique("rag.embedding", {"dim": 64}, {}, upstream={"chunk": {"chunks": docs}})
    assert again["embeddings"] == vecs


def test_embedding_rejects_unknown_model():
    with pytest.raises(SibylError, match="unknown embedding model"):
        call_technique(
            "rag.embedding", {"model": "text-embedding-3-large"}, {}, upstream={"c": {"chunks": [_doc("a")]}}
        )
