"""Golden outputs of the local provider, the text functions it uses and the seed workflows.

Why: the local provider's speed-ups (precompiled patterns, caches keyed by text) must not change one
byte of what it answers. The fixture was written by this file (``SIBYL_GOLDEN_WRITE=1``) before any
optimisation; every later run must reproduce it exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import sibyl_nb as sb
from sibyl_nb.providers.local import LocalProvider
from sibyl_nb.text import corpus
from sibyl_nb.text.classify import classify_text, complexity_of
from sibyl_nb.text.critique import rate_answer
from sibyl_nb.text.extractive import compose, context_or_corpus, more_sentences, rank_sentences
from sibyl_nb.text.query import decompose_query, expand_query, resolve_followup, topic_of
from sibyl_nb.text.ranking import lexical_relevance
from sibyl_nb.text.support import check_answer
from sibyl_nb.text.tokenize import sentences, term_set, terms

FIXTURE = Path(__file__).parent / "data" / "local_golden.json"
SEED = Path(sb.__file__).parent / "data" / "examples" / "seed_pipelines.yaml"
CONTEXT = (
    "Context:\n[1] Python: Python is a high-level programming language created by Guido van Rossum. "
    "It was first released in 1991. It is used for web development, data science and automation.\n"
    "[2] BM25: Okapi BM25 is a ranking function used by search engines. It scores documents by term "
    "frequency and inverse document frequency.\n[3] Go: Go is a language designed at Google. It was "
    "released in 2009."
)
CHAT = [
    {"role": "user", "content": "My name is Alice and I live in Paris."},
    {"role": "assistant", "content": "Nice to meet you, Alice."},
    {"role": "user", "content": "What is Python?"},
    {"role": "assistant", "content": "Python is a high-level programming language."},
]
QUESTIONS = [
    "What is Python used for?",
    "Who created Python?",
    "How does retrieval augmented generation work?",
    "What is a vector database?",
    "How do transformers handle long context?",
    "What are the benefits of caching LLM calls?",
    "Explain reciprocal rank fusion.",
    "What is BM25?",
    "When was Python first released?",
    "Write a comprehensive report on embeddings and vector search.",
    "Analyze the trade-offs between BM25 and dense retrieval.",
    "What is the capital of the moon?",
    "How many dimensions does an embedding have?",
    "Compare Python and Go for web development.",
]
PROMPTS: list[tuple[str, dict[str, Any]]] = [(q, {}) for q in QUESTIONS] + [
    ("What is Python used for?", {"system": CONTEXT}),
    ("Who created it?", {"system": CONTEXT}),
    ("When was Go released?", {"system": CONTEXT}),
    ("What is BM25?", {"system": CONTEXT, "temperature": 0.7}),
    ("What is Python used for?", {"temperature": 0.9}),
    ("Who created it?", {"history": CHAT}),
    ("When was it released?", {"history": CHAT}),
    ("What is my name?", {"history": CHAT}),
    ("Where do I live?", {"history": CHAT}),
    ("Summarise our conversation so far.", {"history": CHAT}),
    (
        "Compress the conversation below into about 30 tokens:\nuser: I like tea.\nassistant: Noted.\n"
        "user: I also like Python and BM25.",
        {},
    ),
    ("Summarize the following text: Python is a language. It is popular. BM25 ranks documents.", {}),
    ("Classify query type: factual, opinion, or creative\nQuery: What is Python?", {}),
    ("Classify query type: factual, opinion, or creative\nQuery: Write a poem about rain", {}),
    ("Classify query type: factual, opinion, or creative\nQuery: Is Go better than Python?", {}),
    ("Classify the sentiment as positive, negative or neutral: I love this library", {}),
    (
        "Classify complexity: simple, medium, complex\nQuery: Explain and compare BM25, dense retrieval "
        "and hybrid search, and analyze when each works best.",
        {},
    ),
    (
        "Rate quality 0-10\nQuestion: What is Python?\nAnswer: Python is a high-level programming language.",
        {},
    ),
    ("Critique this answer: Python is a snake. Rate quality 0-10.\nQuestion: What is Python used for?", {}),
    (
        "Rate the relevance of this document to the question on a scale of 0 to 10.\nQuestion: What is BM25?"
        "\nDocument: Okapi BM25 is a ranking function used by search engines.",
        {},
    ),
    ("Rate quality 1-5", {"history": CHAT, "system": CONTEXT}),
    ("Improve this answer: Python is a language. Python is a snake.\nQuestion: What is Python used for?", {}),
    (
        "Previous: Python is a programming language.\nCritique: Score: 5/10. Missing terms: used, web\n"
        "Improved:\nQuestion: What is Python used for?",
        {},
    ),
    ("Previous: \nCritique: nothing\nImproved:\nQuestion: What is BM25?", {}),
    ("Write a poem about the sea", {}),
    ("Tell me a story about Python", {"temperature": 0.5}),
    ("Write a haiku about search engines", {}),
    ("What is Python used for?", {"max_tokens": 12}),
    ("Give a detailed overview of retrieval augmented generation.", {"max_tokens": 60}),
]


def _provider_case(provider: LocalProvider, prompt: str, opts: dict[str, Any]) -> dict[str, Any]:
    opts = dict(opts)
    messages = ([{"role": "system", "content": opts.pop("system")}] if "system" in opts else []) + list(
        opts.pop("history", [])
    )
    messages.append({"role": "user", "content": prompt})
    c = provider.complete_sync(messages, **opts)
    return {"text": c.text, "fields": c.fields, "usage": c.usage, "finish": c.finish_reason}


def _cands(cs: list[Any]) -> list[Any]:
    return [[c.sentence, c.score, c.relevance, sorted(c.matched), c.doc.get("id")] for c in cs]


def _text_cases() -> dict[str, Any]:
    ctx_docs = [
        {
            "id": "a",
            "title": "Python",
            "text": "Python is a language. It was released in 1991. It is popular.",
        },
        {"id": "b", "title": "Go", "text": "Go is a language designed at Google. It was released in 2009."},
    ]
    out: dict[str, Any] = {}
    for q in QUESTIONS:
        docs = context_or_corpus(q, [])
        out[q] = {
            "docs": [[d["id"], d.get("score")] for d in docs],
            "rank": _cands(rank_sentences(q, docs)[:12]),
            "compose": _cands(compose(q, docs, 3)),
            "compose_t": _cands(compose(q, docs, 2, 0.8, 12345, 0.25)),
            "more": _cands(more_sentences(q, "Python is a language.", docs, k=2, prefer=["web", "data"])),
            "ctx": _cands(rank_sentences(q, ctx_docs)),
            "terms": terms(q),
            "term_set": sorted(term_set(q)),
            "topic": topic_of(q),
            "complexity": complexity_of(q),
            "class": classify_text(q, ("factual", "opinion", "creative")),
            "expand": expand_query(q, 3),
            "decompose": decompose_query(q),
            "followup": resolve_followup("Who created it?", [{"role": "user", "content": q}]),
            "relevance": [lexical_relevance(q, d, corpus.idf) for d in docs[:4]],
            "sentences": [sentences(str(d.get("text", ""))) for d in docs[:2]],
            "rate": repr(rate_answer(q, "Python is a language used for web development.", None)),
            "check": repr(check_answer("Python is a language. Python is a snake.", None)),
        }
    return out


def _workflow_cases() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("research_workflow", "iterative_refinement", "adaptive_workflow", "conversational_agent"):
        pipe = sb.Pipeline.from_yaml(SEED, name=name)
        for q in QUESTIONS[:6] + ["Tell me a story about a dragon"]:
            r = pipe.run({"query": q, "message": q})
            outputs = json.loads(json.dumps(r.outputs, default=str, sort_keys=True))
            session = outputs.get("session_management")
            if isinstance(session, dict) and "session_id" in session:
                session["session_id"] = "<fresh uuid>"  # a new session per run: random by design
            out[f"{name}|{q}"] = outputs
    return out


def build() -> dict[str, Any]:
    provider = LocalProvider()
    return {
        "provider": [_provider_case(provider, p, o) for p, o in PROMPTS],
        "text": _text_cases(),
        "workflows": _workflow_cases(),
    }


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    if os.environ.get("SIBYL_GOLDEN_WRITE") == "1":
        FIXTURE.write_text(json.dumps(build(), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return dict(json.loads(FIXTURE.read_text()))


def test_provider_answers_are_unchanged(golden: dict[str, Any]) -> None:
    provider = LocalProvider()
    got = json.loads(json.dumps([_provider_case(provider, p, o) for p, o in PROMPTS]))
    assert len(got) == len(golden["provider"]) == 43
    for i, (g, want) in enumerate(zip(got, golden["provider"], strict=True)):
        assert g == want, (i, PROMPTS[i][0])


def test_text_functions_are_unchanged(golden: dict[str, Any]) -> None:
    got = json.loads(json.dumps(_text_cases()))
    assert sorted(got) == sorted(golden["text"])
    for q in got:
        assert got[q] == golden["text"][q], q


def test_seed_workflows_are_unchanged(golden: dict[str, Any]) -> None:
    got = _workflow_cases()
    assert sorted(got) == sorted(golden["workflows"])
    for k in got:
        assert got[k] == golden["workflows"][k], k


def test_provider_answers_repeat_within_one_process(golden: dict[str, Any]) -> None:
    """Caches keyed by text give the same answer the second time as the first."""
    provider = LocalProvider()
    for _ in range(2):
        got = json.loads(json.dumps([_provider_case(provider, p, o) for p, o in PROMPTS]))
        assert got == golden["provider"]


def test_an_edited_lexicon_is_used_after_a_cached_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Classification is cached by text, but ``LEXICONS`` is public: an edit must still count."""
    from sibyl_nb.text import classify

    choices = ("positive", "negative", "neutral")
    assert classify_text("The zorbly gadget", choices) == "neutral"
    assert classify.is_creative_request("Zorble me something") is False
    monkeypatch.setitem(classify.LEXICONS, "positive", {**classify.LEXICONS["positive"], "zorbly": 3.0})
    monkeypatch.setitem(classify.LEXICONS, "creative", {**classify.LEXICONS["creative"], "zorble": 3.0})
    assert classify_text("The zorbly gadget", choices) == "positive"
    assert classify.is_creative_request("Zorble me something") is True


def test_a_search_repeated_after_the_corpus_changes_sees_the_change() -> None:
    """Searches are remembered per index; adding documents builds a new index, so nothing stale is served."""
    query = "zorbly quasarix"
    try:
        assert corpus.search(query, corpus.ALL, "bm25", 5) == []
        corpus.add_documents("golden_extra", [{"id": "z1", "title": "Zorbly", "text": "Zorbly quasarix."}])
        assert [d["id"] for d in corpus.search(query, corpus.ALL, "bm25", 5)] == ["z1"]
        corpus.add_documents("golden_extra", [{"id": "z2", "title": "More", "text": "Quasarix, zorbly."}])
        assert [d["id"] for d in corpus.search(query, corpus.ALL, "bm25", 5)] == ["z1", "z2"]
    finally:
        corpus.reset_corpus()
    assert corpus.search(query, corpus.ALL, "bm25", 5) == []
