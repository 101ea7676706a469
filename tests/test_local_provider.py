"""The deterministic local provider: answer, classify, rate, improve, creative; usage and determinism."""

from __future__ import annotations

import asyncio

import pytest

from sibyl_nb.context.tokens import count_tokens, token_encoding_name
from sibyl_nb.providers.local import LocalProvider, parse_context_block
from sibyl_nb.providers.registry import get_provider, make_provider
from sibyl_nb.text import corpus
from sibyl_nb.text.prompts import parse_score


@pytest.fixture(autouse=True)
def _fresh_corpus():
    corpus.reset_corpus()
    yield
    corpus.reset_corpus()


def ask(content: str, *, system: str | None = None, history: list | None = None, **params):
    messages = ([{"role": "system", "content": system}] if system else []) + list(history or [])
    messages.append({"role": "user", "content": content})
    return asyncio.run(LocalProvider().complete(messages, **params))


def test_registry_defaults_are_local():
    for name in ("local", "primary", "fallback"):
        p = get_provider(name)
        assert isinstance(p, LocalProvider) and p.name == name
    custom = make_provider("mine", {"kind": "local", "max_sentences": 3, "unknown_option": True})
    assert isinstance(custom, LocalProvider) and custom.max_sentences == 3


def test_answers_from_corpus_without_context():
    c = ask("What is Python used for?")
    assert c.text.startswith("Python is used for web development")
    assert c.provider == "local" and c.model == "local-extractive-v1" and c.finish_reason == "stop"


def test_answers_from_context_block_over_corpus():
    system = (
        "You are helpful.\n\nContext:\n[1] Zorblax: Zorblax is a fictional database built in 2031. "
        "It stores cats.\n[2] Other: Unrelated text about weather."
    )
    c = ask("What is Zorblax?", system=system)
    assert c.text.startswith("Zorblax is a fictional database built in 2031.")


def test_parse_context_block():
    docs = parse_context_block("Context:\n[1] T1: body one: with colon\n[2] no title here\nplain line")
    assert docs == [
        {"id": "context-1", "title": "T1", "text": "body one: with colon"},
        {"id": "context-2", "title": "", "text": "no title here"},
    ]


def test_unknown_topic_says_it_has_no_information():
    c = ask("What is the airspeed of an unladen swallow?")
    assert c.text == "I don't have information about airspeed in the local corpus."


def test_follow_up_resolved_against_conversation():
    history = [
        {"role": "user", "content": "What is Python?"},
        {"role": "assistant", "content": "Python is a high-level programming language."},
    ]
    c = ask("What's it used for?", history=history)
    assert c.text.startswith("Python is used for")
    who = ask("Who created it?", history=history)
    assert "Guido van Rossum" in who.text


def test_classification_modes():
    c = ask("Classify query type: factual, opinion, or creative\n\nQuestion: Write a poem about the sea")
    assert c.text == "creative"
    assert c.fields == {"query_type": "creative", "type": "creative", "label": "creative"}
    assert (
        ask(
            "Classify query type: factual, opinion, or creative\n\nQuestion: What year was Python created?"
        ).text
        == "factual"
    )
    assert (
        ask("Classify query type: factual, opinion, or creative\n\nQuestion: Is Rust better than Go?").text
        == "opinion"
    )
    assert (
        ask("Classify sentiment: positive, negative, neutral\n\nQuestion: I love this library").text
        == "positive"
    )
    # No Question: section: the text to classify is the rest of the message, or the previous user turn.
    assert ask("Classify complexity: simple, medium, complex\nWhat is Python?").text == "simple"
    history = [{"role": "user", "content": "Tell me a story about a dragon"}]
    assert ask("Classify query type: factual, opinion, or creative", history=history).text == "creative"


def test_unknown_labels_fall_back_to_first_choice_or_word_match():
    assert (
        ask("Classify topic: cooking, programming\n\nQuestion: a programming question").text == "programming"
    )
    assert ask("Classify topic: cooking, gardening\n\nQuestion: zzz").text == "cooking"


def test_rating_quality_scores_better_answers_higher():
    q = "\n\nQuestion: What is Python used for?"
    good = ask(
        "Critique this answer: Python is used for web development, data science, machine learning, "
        "automation and scripting.\nRate quality 0-10:" + q
    )
    bad = ask("Critique this answer: Python was invented on Mars by robots.\nRate quality 0-10:" + q)
    assert good.text.startswith("Score: ")
    assert good.fields["score"] == parse_score(good.text) and bad.fields["score"] == parse_score(bad.text)
    assert good.fields["score"] > bad.fields["score"]
    assert "Unsupported: Python was invented on Mars by robots." in bad.text
    assert "Missing: used" in bad.text


def test_rating_on_another_scale():
    c = ask(
        "Critique this answer: Python is used for web development, data science, machine learning, "
        "automation and scripting.\nRate quality on a scale from 1 to 5.\n\nQuestion: What is Python used for?"
    )
    score = parse_score(c.text, 1, 5)
    assert 1 <= score <= 5 and c.text.startswith("Score: ") and "/5" in c.text.splitlines()[0]


def test_relevance_rating():
    rel = ask(
        "Rate the relevance of this document to the question on a scale 0-10.\n"
        "Document: Guido van Rossum created Python.\nQuestion: Who created Python?"
    )
    irrel = ask(
        "Rate the relevance of this document to the question on a scale 0-10.\n"
        "Document: Cats sleep a lot.\nQuestion: Who created Python?"
    )
    assert rel.fields["score"] > irrel.fields["score"]


def test_improve_adds_supported_sentences_until_score_reaches_8():
    question = "How does hybrid search work?"
    answer = "Hybrid search is good."
    scores = []
    for _ in range(5):
        c = ask(f"Critique this answer: {answer}\nRate quality 0-10:\n\nQuestion: {question}")
        scores.append(c.fields["score"])
        if scores[-1] >= 8:
            break
        improved = ask(f"Previous: {answer}\nCritique: {c.text}\nImproved:\n\nQuestion: {question}")
        assert improved.text.startswith(answer.split(".")[0]) or len(improved.text) > len(answer)
        answer = improved.text
    assert scores == sorted(scores) and scores[-1] >= 8 and len(scores) <= 5


def test_improve_this_answer_form():
    c = ask("Improve this answer: Python is a programming language.\n\nQuestion: What is Python used for?")
    assert c.text.startswith("Python is a programming language.")
    assert "used for" in c.text


def test_improve_drops_unsupported_sentence_when_nothing_is_lost():
    prev = (
        "Python is used for web development, data science, machine learning, automation and scripting. "
        "Python is used on Mars by robots daily."
    )
    c = ask(f"Previous: {prev}\nCritique: Unsupported\nImproved:\n\nQuestion: What is Python used for?")
    assert "Mars" not in c.text and c.text.startswith("Python is used for web development")


def test_creative_requests_get_a_templated_verse():
    c = ask("Write a poem about the sea")
    assert "the sea" in c.text.lower() and c.text.count("\n") == 3
    assert ask("Write a poem about the sea").text == c.text
    story = ask("Tell me a story about Python", temperature=1.0)
    assert "Python" in story.text and ("Once" in story.text or "Nobody" in story.text)


def test_deterministic_and_temperature_seeded():
    a = ask("What is machine learning?", temperature=1.2)
    b = ask("What is machine learning?", temperature=1.2)
    assert a.text == b.text
    cold = {ask("What is machine learning?", temperature=0).text for _ in range(3)}
    assert len(cold) == 1
    texts = {ask("What is machine learning?", temperature=t).text for t in (0.0, 0.4, 0.8, 1.2, 1.6, 2.0)}
    assert len(texts) >= 2  # temperature picks among near-ties


def test_long_form_prompts_give_longer_answers():
    short = ask("What is retrieval-augmented generation?")
    report = ask("Create comprehensive report\n\nQuestion: What is retrieval-augmented generation?")
    assert len(report.text) > len(short.text)


def test_usage_counts_tokens_and_max_tokens_truncates():
    c = ask("Create comprehensive report\n\nQuestion: What is Python?")
    assert c.usage["completion_tokens"] == count_tokens(c.text)
    assert c.usage["total_tokens"] == c.usage["prompt_tokens"] + c.usage["completion_tokens"]
    assert token_encoding_name() in ("cl100k_base", "chars/4")
    short = ask("Create comprehensive report\n\nQuestion: What is Python?", max_tokens=25)
    assert short.finish_reason == "length" and short.usage["completion_tokens"] <= 25


def test_stream_yields_the_completion_text():
    async def collect():
        p = LocalProvider()
        msgs = [{"role": "user", "content": "What is BM25?"}]
        return "".join([piece async for piece in p.stream(msgs)]), (await p.complete(msgs)).text

    streamed, full = asyncio.run(collect())
    assert streamed == full
