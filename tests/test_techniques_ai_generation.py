"""ai_generation.*: generation (messages, parsed fields, usage), validation, consensus, refinement."""

from __future__ import annotations

import asyncio

import pytest

from sibyl_nb.providers.base import Completion
from sibyl_nb.techniques.builtins.ai_generation import output_fields, parse_fields
from sibyl_nb.techniques.registry import get_technique
from sibyl_nb.testing import StandaloneRun, call_technique, make_context
from sibyl_nb.text import corpus


@pytest.fixture(autouse=True)
def _fresh_corpus():
    corpus.reset_corpus()
    yield
    corpus.reset_corpus()


class Recorder:
    """A provider that records what it was sent and replies from a function of (messages, params)."""

    def __init__(self, reply=lambda messages, params: "ok", name="rec"):
        self.name = name
        self.reply = reply
        self.calls: list[tuple[list, dict]] = []

    async def complete(self, messages, **params):
        self.calls.append((messages, params))
        return Completion(
            text=self.reply(messages, params),
            usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            model="fake-1",
            provider=self.name,
        )


def _run_with(provider, config, input, **kwargs):
    run = StandaloneRun(input=input, providers={provider.name: provider}, session=kwargs.pop("session", None))
    ctx = make_context(dict(config, provider=provider.name), run=run, **kwargs)
    return asyncio.run(get_technique(ctx.technique or "ai_generation.generation").fn(ctx)), ctx


def _gen(config, input, **kwargs):
    return call_technique("ai_generation.generation", config, input, **kwargs)


# -- classification -----------------------------------------------------------------------------------------
CLASSIFY = "Classify query type: factual, opinion, or creative"


@pytest.mark.parametrize(
    "query,label",
    [
        ("Write a poem about the sea", "creative"),
        ("What year was Python created?", "factual"),
        ("Should I learn Rust or Go?", "opinion"),
    ],
)
def test_classify_query_type(query, label):
    out = _gen({"prompt": CLASSIFY}, {"query": query})
    assert out["kind"] == "classification"
    assert out["type"] == out["query_type"] == out["label"] == label
    assert out["choices"] == ["factual", "opinion", "creative"]
    assert "answer" not in out  # ${answer} keeps meaning the answer, not a label


@pytest.mark.parametrize(
    "query,level",
    [
        ("What is Python?", "simple"),
        ("How does hybrid search combine BM25 with vector search?", "medium"),
        (
            "Compare BM25 and vector search and explain when to use each for a RAG pipeline, with trade-offs",
            "complex",
        ),
    ],
)
def test_classify_complexity(query, level):
    out = _gen({"prompt": "Classify complexity: simple, medium, complex"}, {"query": query})
    assert out["complexity"] == level


def test_classification_is_parsed_from_any_models_reply():
    rec = Recorder(lambda m, p: "I would say this query is Opinion-based... final answer: opinion.")
    out, _ = _run_with(rec, {"prompt": CLASSIFY}, {"query": "x"})
    assert out["type"] == "opinion"
    rec = Recorder(lambda m, p: "no idea")
    out, _ = _run_with(rec, {"prompt": CLASSIFY}, {"query": "x"})
    assert out["type"] is None and out["kind"] == "classification"


def test_parse_fields_names():
    f = parse_fields("Classify the sentiment of this review: positive, negative or neutral", "negative")
    assert f["sentiment"] == "negative" and f["label"] == "negative"
    assert parse_fields("Summarise", "hello") == {"kind": "answer", "answer": "hello"}
    assert output_fields({"prompt": CLASSIFY})[-2:] == ("query_type", "type")
    assert "score" in output_fields({"prompt": "Rate quality 0-10"})
    assert "answer" in output_fields({})
    assert get_technique("ai_generation.generation").fn.output_fields is output_fields


# -- rating -------------------------------------------------------------------------------------------------
def test_rating_parses_score_from_reply():
    rec = Recorder(lambda m, p: "Decent answer. I'd give it 6 out of 10.")
    out, _ = _run_with(
        rec,
        {"prompt": "Critique this answer: Python is a language.\nRate quality 0-10:"},
        {"query": "What is Python?"},
    )
    assert out["kind"] == "rating" and out["score"] == 6
    assert out["critique"] == out["text"]
    assert "answer" not in out


def test_rating_with_local_provider():
    out = _gen(
        {
            "prompt": "Critique this answer: Python is a high-level, general-purpose programming language.\n"
            "Rate quality 0-10:"
        },
        {"query": "What is Python?"},
    )
    assert out["kind"] == "rating"
    assert out["text"].startswith(f"Score: {out['score']}/10")
    assert 0 <= out["score"] <= 10


# -- messages -----------------------------------------------------------------------------------------------
def test_messages_have_context_conversation_and_question():
    rec = Recorder()
    docs = [{"id": "d1", "title": "Python: intro", "text": "Python is a language.\nIt is popular."}]
    session = {
        "context_messages": [
            {"role": "system", "content": "Summary: talked about Python"},
            {"role": "user", "content": "What is Python?"},
            {"role": "assistant", "content": "A language."},
            {"role": "user", "content": "Who made it?"},
        ]
    }
    out, _ = _run_with(
        rec,
        {"prompt": "Answer briefly", "system_prompt": "Be nice.", "temperature": 0.3},
        {"message": "Who made it?"},
        session=session,
        upstream={"search": {"documents": docs}},
    )
    messages, params = rec.calls[0]
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(
        "Be nice.\n\nContext:\n[1] Python - intro: Python is a language. It is popular."
    )
    assert [m["role"] for m in messages[1:]] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "Answer briefly\n\nQuestion: Who made it?"  # current message sent once
    assert params == {"temperature": 0.3}
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert out["model"] == "fake-1" and out["provider"] == "rec"
    assert out["context_count"] == 1


def test_prompt_containing_the_question_is_not_repeated():
    rec = Recorder()
    _run_with(rec, {"prompt": "Answer: What is Python?"}, {"query": "What is Python?"})
    assert rec.calls[0][0][-1]["content"] == "Answer: What is Python?"


def test_without_prompt_the_user_message_is_the_query_and_history_is_used():
    rec = Recorder()
    history = [
        {"role": "user", "content": "What is Python?"},
        {"role": "assistant", "content": "A language."},
        {"role": "user", "content": "What's it used for?"},
    ]
    _run_with(
        rec,
        {},
        {"message": "What's it used for?"},
        session={"conversation_history": history, "query": "What is Python used for?"},
    )
    messages = rec.calls[0][0]
    assert messages[-1] == {"role": "user", "content": "What is Python used for?"}
    assert [m["content"] for m in messages[1:-1]] == ["What is Python?", "A language."]


# -- answers with the local provider -------------------------------------------------------------------------
def test_generation_answers_from_upstream_documents():
    docs = [
        {
            "id": "x",
            "title": "Zorblax",
            "text": "Zorblax is a fictional database built in 2031. It stores cats.",
        }
    ]
    out = _gen({}, {"query": "What is Zorblax?"}, upstream={"retrieve": {"documents": docs}})
    assert out["kind"] == "answer" and out["answer"] == out["text"]
    assert "Zorblax is a fictional database built in 2031." in out["text"]
    assert out["usage"]["prompt_tokens"] > 0 and out["usage"]["completion_tokens"] > 0


def test_conversational_follow_up_is_answered_about_the_topic():
    history = [
        {"role": "user", "content": "What is Python?"},
        {"role": "assistant", "content": "Python is a high-level programming language."},
    ]
    rewrite = call_technique(
        "rag.query_processing",
        {"subtechnique": "rewriting", "context": history},
        {"message": "What's it used for?"},
    )
    run = StandaloneRun(input={"message": "What's it used for?"}, session={"conversation_history": history})
    ctx = make_context({"subtechnique": "rewriting", "context": history}, run=run)
    get_technique("rag.query_processing").fn(ctx)
    retrieved = asyncio.run(get_technique("rag.retrieval").fn(make_context({"top_k": 5}, run=run)))
    gen_ctx = make_context({"provider": "primary"}, run=run, upstream={"retrieve": retrieved})
    out = asyncio.run(get_technique("ai_generation.generation").fn(gen_ctx))
    assert rewrite["query"] == "What is Python used for?"
    assert out["text"].startswith("Python is used for")


def test_unknown_topic_says_so():
    out = _gen({}, {"query": "What is the airspeed of an unladen swallow?"})
    assert out["text"].startswith("I don't have information about")


# -- iterative refinement (the seed's generate -> critique -> refine loop, by hand) ------------------------------
def _refine_loop(question: str, answer: str, rounds: int = 4) -> list[int]:
    scores = []
    for _ in range(rounds + 1):
        critique = _gen(
            {"prompt": f"Critique this answer: {answer}\nRate quality 0-10:\n"}, {"query": question}
        )
        scores.append(critique["score"])
        if critique["score"] >= 8:
            break
        refined = _gen(
            {"prompt": f"Previous: {answer}\nCritique: {critique['text']}\nImproved:\n"}, {"query": question}
        )
        assert refined["kind"] == "answer"
        answer = refined["answer"]
    return scores


@pytest.mark.parametrize(
    "question,start",
    [
        ("What is Python used for?", "Python was invented on Mars by robots."),
        ("What is Python?", "Python is a high-level, general-purpose programming language."),
        ("What is retrieval-augmented generation?", "It is a thing."),
    ],
)
def test_refinement_raises_score_monotonically_to_8_within_4_rounds(question, start):
    scores = _refine_loop(question, start)
    assert scores == sorted(scores), scores
    assert scores[-1] >= 8, scores
    assert len(scores) <= 5  # at most 4 refinements


def test_generate_then_critique_then_refine_from_scratch():
    first = _gen({"temperature": 0.8}, {"query": "What is Python?"})
    scores = _refine_loop("What is Python?", first["answer"])
    assert scores[-1] >= 8


# -- validation ---------------------------------------------------------------------------------------------
def test_fact_check_supported_answer_scores_one():
    answer = {
        "answer": "Python was created by Guido van Rossum and first released in 1991.",
        "kind": "answer",
    }
    out = call_technique(
        "ai_generation.validation", {}, {"query": "Who created Python?"}, upstream={"gen": answer}
    )
    assert out["score"] == 1.0 and out["valid"] is True and out["issues"] == []
    assert out["answer"] == answer["answer"] and out["source"] == "gen"
    assert out["checks"][0]["supported"] is True


def test_fact_check_flags_unsupported_sentences_against_retrieved_documents():
    docs = [{"id": "d", "title": "Python", "text": "Python was created by Guido van Rossum."}]
    answer = "Python was created by Guido van Rossum. Python was designed on Mars by robots."
    run = StandaloneRun(input={"query": "q"}, results={"search": {"documents": docs}})
    ctx = make_context({"subtechnique": "fact_check"}, run=run, upstream={"gen": {"text": answer}})
    out = get_technique("ai_generation.validation").fn(ctx)  # documents found among earlier results
    assert out["score"] == 0.5 and out["valid"] is False
    assert any("Mars" in i for i in out["issues"])
    assert [c["supported"] for c in out["checks"]] == [True, False]


def test_fact_check_counts_corpus_support_but_reports_context_score():
    docs = [{"id": "cats", "title": "Cats", "text": "Cats sleep for most of the day."}]
    answer = "Python was created by Guido van Rossum and first released in 1991."
    out = call_technique(
        "ai_generation.validation",
        {},
        {"query": "Who created Python?"},
        upstream={"gen": {"answer": answer}, "search": {"documents": docs}},
    )
    assert out["score"] == 1.0 and out["context_score"] == 0.0
    assert out["checks"][0]["in_sources"] is False


def test_validation_without_answer():
    out = call_technique("ai_generation.validation", {}, {"query": "q"})
    assert out["score"] == 0.0 and out["valid"] is False and out["issues"]


def test_validation_ignores_classification_text():
    out = call_technique(
        "ai_generation.validation",
        {},
        {"query": "q"},
        upstream={"classify": {"text": "factual", "kind": "classification"}},
    )
    assert out["answer"] == ""


def test_quality_validation_uses_rubric():
    good = (
        "Python is used for web development, data science, machine learning, automation and scripting. "
        "Python is used in web and internet development, scientific and numeric computing, education, "
        "desktop interfaces and software development."
    )
    out = call_technique(
        "ai_generation.validation",
        {"subtechnique": "quality"},
        {"query": "What is Python used for?"},
        upstream={"g": {"answer": good}},
    )
    weak = call_technique(
        "ai_generation.validation",
        {"subtechnique": "quality"},
        {"query": "What is Python used for?"},
        upstream={"g": {"answer": "It is nice."}},
    )
    assert out["score"] > weak["score"]
    assert out["checks"][0]["check"] == "rubric"


def test_consistency_validation_detects_contradiction():
    answer = "Python is dynamically typed. Python is not dynamically typed."
    out = call_technique(
        "ai_generation.validation",
        {"subtechnique": "consistency"},
        {"query": "q"},
        upstream={"g": {"answer": answer}},
    )
    assert out["score"] < 1.0 and any("contradiction" in i for i in out["issues"])
    fine = call_technique(
        "ai_generation.validation",
        {"subtechnique": "consistency"},
        {"query": "q"},
        upstream={"g": {"answer": "Python is dynamically typed."}},
    )
    assert fine["score"] == 1.0


def test_consistency_uses_consensus_candidates():
    cands = [{"text": "Python is great."}, {"text": "Rust is fast."}]
    out = call_technique(
        "ai_generation.validation",
        {"subtechnique": "consistency"},
        {"query": "q"},
        upstream={"c": {"answer": "Python is great.", "candidates": cands}},
    )
    assert any(c["check"] == "candidate_agreement" for c in out["checks"])
    assert out["score"] < 1.0


# -- consensus ----------------------------------------------------------------------------------------------
def test_consensus_picks_the_majority():
    def reply(messages, params):
        return "Rust is better for safety." if params["temperature"] > 1.0 else "Go is better for simplicity."

    rec = Recorder(reply)
    run = StandaloneRun(input={"query": "Rust or Go?"}, providers={"rec": rec})
    ctx = make_context({"provider": "rec", "num_candidates": 3}, run=run)
    out = asyncio.run(get_technique("ai_generation.consensus").fn(ctx))
    assert out["answer"] == out["text"] == "Go is better for simplicity."
    assert [c["temperature"] for c in out["candidates"]] == [0.2, 0.7, 1.2]
    assert len(rec.calls) == 3
    assert 0 < out["agreement"] <= 1
    assert out["usage"]["total_tokens"] == 21


def test_consensus_with_local_provider_is_deterministic():
    a = call_technique("ai_generation.consensus", {"num_candidates": 4}, {"query": "Is Rust better than Go?"})
    b = call_technique("ai_generation.consensus", {"num_candidates": 4}, {"query": "Is Rust better than Go?"})
    assert a == b
    assert len(a["candidates"]) == 4
    assert a["answer"] in [c["text"] for c in a["candidates"]]
