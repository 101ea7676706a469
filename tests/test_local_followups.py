"""The local provider in a conversation: follow-ups resolve he/she/it/there to what either side
named, answers come from the conversation when it holds them, "summarise" summarises, and no
sentence is produced that is in neither the corpus nor the conversation."""

from __future__ import annotations

import re

import pytest

from sibyl_nb.providers.local import LocalProvider
from sibyl_nb.text import corpus
from sibyl_nb.text.query import resolve_followup
from sibyl_nb.text.tokenize import sentences

P = LocalProvider()


def chat(questions):
    history, answers = [], []
    for q in questions:
        a = P.complete_sync(history + [{"role": "user", "content": q}]).text
        answers.append(a)
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return history, answers


def _sources(history) -> str:
    docs = [d for c in corpus.list_collections() for d in corpus.get_documents(c)]
    return "\n".join([str(d.get("text", "")) for d in docs] + [m["content"] for m in history])


def _unframed(answer: str) -> list[str]:
    """Answer sentences without the provider's quote frames ('You told me: "..."', 'Go: ...')."""
    out = []
    for s in sentences(answer):
        s = re.sub(r'^(?:You told me|I said earlier):\s*"(.*)"$', r"\1", s)
        s = re.sub(r"^[A-Z][\w+#.-]*(?: [A-Z][\w+#.-]*){0,3}: (?=[A-Z])", "", s)
        out.append(s)
    return out


def test_who_designed_go_treats_go_as_a_name_and_it_follows():
    history, (first, second) = chat(["Who designed Go?", "When was it released?"])
    assert "Rob Pike" in first
    assert "2009" in second and "Python" not in second
    assert resolve_followup("When was it released?", history[:2]) == "When was Go released?"


@pytest.mark.parametrize(
    "turns,question,expected",
    [
        (
            [
                ("user", "Who created Python?"),
                ("assistant", "Python was created by Guido van Rossum in 1991."),
            ],
            "Where did he work?",
            "Where did Guido van Rossum work?",
        ),
        (
            [("user", "Tell me about Marie Curie."), ("assistant", "Marie Curie won two Nobel prizes.")],
            "When was she born?",
            "When was Marie Curie born?",
        ),
        (
            [("user", "I am flying to Lisbon in May."), ("assistant", "Lisbon is lovely in May.")],
            "What should I eat there?",
            "What should I eat in Lisbon?",
        ),
        (
            [("user", "I am flying to Lisbon in May."), ("assistant", "Lisbon is lovely in May.")],
            "How do I get there from the airport?",
            "How do I get to Lisbon from the airport?",
        ),
        (
            [("user", "What is Rust?"), ("assistant", "Rust is a systems programming language.")],
            "Who uses it?",
            "Who uses Rust?",
        ),
        (
            [("user", "What is Rust?"), ("assistant", "Rust is a systems programming language.")],
            "Is there a package manager?",
            "Is there a package manager?",
        ),
    ],
)
def test_pronouns_resolve_to_what_either_side_named(turns, question, expected):
    history = [{"role": r, "content": c} for r, c in turns]
    assert resolve_followup(question, history) == expected


def test_the_answer_comes_from_the_conversation_when_it_is_there():
    history = [
        {"role": "user", "content": "My name is Alice Moreau and I work as a pilot."},
        {"role": "assistant", "content": "Nice to meet you, Alice."},
    ]
    answer = P.complete_sync(history + [{"role": "user", "content": "What is my name?"}]).text
    assert answer == 'You told me: "My name is Alice Moreau and I work as a pilot."'
    general = P.complete_sync(history + [{"role": "user", "content": "What is Python?"}]).text
    assert "Python" in general and "Alice" not in general


def test_summarise_summarises_the_transcript_and_never_answers_from_the_corpus():
    transcript = (
        "user: Hi there\nassistant: Hello! How can I help?\n"
        "user: My flight lands at Haneda at 6:40 on March 3.\nassistant: Noted, I will plan around it.\n"
        "user: What is Python used for?\nassistant: Python is used for many things."
    )
    out = P.complete_sync(
        [
            {"role": "system", "content": "Compress the conversation below into at most about 40 tokens."},
            {"role": "user", "content": transcript},
        ]
    ).text
    assert "Haneda at 6:40 on March 3" in out
    assert "I don't have information" not in out and "web development" not in out
    for s in _unframed(out):
        assert re.sub(r"^(User|Assistant): ", "", s) in transcript


QUESTIONS = [
    ["Who designed Go?", "When was it released?", "Who else worked on it?"],
    ["What is Python used for?", "Who created it?", "Where did he work?"],
    ["My name is Sam and I live in Oslo.", "What is the weather like there?", "What is my name?"],
    ["What is BM25?", "How does it rank documents?"],
]


@pytest.mark.parametrize("questions", QUESTIONS)
def test_no_sentence_is_in_neither_the_corpus_nor_the_conversation(questions):
    history, answers = chat(questions)
    sources = _sources(history[:-1])
    for answer in answers:
        if answer.startswith("I don't have information"):
            continue
        for s in _unframed(answer):
            assert s in sources, s


def test_off_topic_sentences_stay_out_of_the_answer():
    answer = P.complete_sync([{"role": "user", "content": "What is Python used for?"}]).text
    assert "Python" in answer and "BM25" not in answer and "Okapi" not in answer


def test_a_pronoun_sentence_is_quoted_never_rewritten():
    from sibyl_nb.text.extractive import rank_sentences

    doc = {"title": "Go", "text": "Go is a language designed at Google by Rob Pike. It was released in 2009."}
    ranked = rank_sentences("When was Go released?", [doc])
    assert (
        ranked[0].sentence == "Go: It was released in 2009."
    )  # labelled with its subject, quoted as written
    for c in ranked:
        assert re.sub(r"^Go: ", "", c.sentence) in sentences(doc["text"])
