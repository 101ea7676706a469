"""The deterministic local provider: a documented, model-free stand-in for an LLM.

It exists so every example runs offline, in CI, with the same output every time. It is honest
about what it is: it never invents text, it selects it. Given OpenAI-style messages it looks at
the last user message and answers in one of five modes:

- **classify** ("Classify query type: factual, opinion, or creative"): the label a keyword
  lexicon picks for the question (:mod:`sibyl_nb.text.classify`; complexity from length, clauses
  and analysis words); the reply is the bare label.
- **rate** ("Rate quality 0-10"): scores the answer under critique with the rubric of
  :mod:`sibyl_nb.text.critique` (coverage of the question's terms, grounding in the context or
  corpus, number of supporting sentences); replies ``Score: N/10`` plus a critique. "Rate the
  relevance ..." scores a document with the lexical relevance scorer instead.
- **improve** ("Improve this answer: ...", "Previous: ... Critique: ... Improved:"): the previous
  answer without its unsupported sentences (when that loses no question terms) plus the next best
  supporting sentence, preferring terms the critique listed as missing. Each round therefore adds
  a point to the rubric until it reaches 8+ (or the sources run out).
- **creative** ("Write a poem about the sea"): a short templated verse/story about the topic.
- **answer** (anything else): extractive. The question (after resolving pronouns against earlier
  user turns) ranks the sentences of the ``Context:`` documents in the system message, or of the
  BM25 hits in the local corpus when there is no context (:mod:`sibyl_nb.text.extractive`); the
  reply is the best 1-3 sentences (up to 5 for "report"/"comprehensive"/"analyze"), or a plain "I
  don't have information about X" when nothing is relevant.

``temperature`` changes only which of several near-equal sentences (or templates) is chosen, using
a generator seeded by a hash of the messages and the temperature: never global random state.
Usage counts use tiktoken's ``cl100k_base`` from the offline package, else a word estimate.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

from ..context.extractive import summarize_messages
from ..context.tokens import count_message_tokens, count_tokens, get_counter
from ..text import corpus
from ..text.classify import classify_text, complexity_of, is_creative_request
from ..text.critique import rate_answer
from ..text.extractive import compose, context_or_corpus, more_sentences, rank_sentences
from ..text.prompts import (
    ClassifySpec,
    RatingSpec,
    parse_classify_prompt,
    parse_rating_prompt,
    parse_score,
    split_question,
)
from ..text.query import messages_of, resolve_followup, topic_of
from ..text.ranking import lexical_relevance
from ..text.support import check_answer
from ..text.tokenize import sentences, term_set, words
from .base import Completion, Message

__all__ = ["LocalProvider", "parse_context_block", "MODEL_NAME"]

MODEL_NAME = "local-extractive-v1"

_CONTEXT_LINE = re.compile(r"^\s*\[(\d+)\]\s*(.+)$")
_LONG_FORM = re.compile(
    r"\b(?:comprehensive|report|in\s+detail|detailed|analy[sz]e|analysis|summari[sz]e|"
    r"summary|overview|elaborate|thorough)\b",
    re.I,
)
# "Compress the conversation below ...", "Summarise our conversation so far": summarise, never answer.
_SUMMARISE = re.compile(
    r"\b(?:summari[sz]e|compress|condense)\b[^\n]{0,80}?\b(?:conversation|chat|discussion|dialogue|"
    r"transcript|messages|text|below|following|this)\b",
    re.I,
)
_IMPROVE_START = re.compile(r"^\s*(?:please\s+)?(?:improve|refine|revise|rewrite)\b", re.I)
_IMPROVE_END = re.compile(r"\b(?:improved|refined|revised)(?:\s+answer)?\s*:\s*$", re.I)
_WORD_PIECE = re.compile(r"\S+\s*")
_BUDGET = re.compile(r"\babout\s+(\d+)\s+tokens\b", re.I)
_TRANSCRIPT = re.compile(r"^\s*(?:user|assistant)\s*:", re.I | re.M)
_SUMMARY_VERB = re.compile(r"^.*?\b(?:summari[sz]e|compress|condense)\b[^:\n]*:?", re.I | re.S)
_SO_FAR = re.compile(r"\b(?:conversation|chat|discussion|so far)\b", re.I)
_MISSING = re.compile(r"missing(?:\s+terms)?\s*:\s*([^\n'\"}\]]+)", re.I)
_PERSONAL = re.compile(r"\b(?:my|me|mine|i|we|our|us)\b", re.I)
_LONGEST_FORM = re.compile(r"\b(?:comprehensive|report|thorough|in\s+detail|detailed)\b", re.I)


def parse_context_block(system_text: str) -> list[dict[str, Any]]:
    """Documents listed as ``[n] title: text`` lines (what ``ai_generation.generation`` writes)."""
    return [{"id": i, "title": title, "text": text} for i, title, text in _context_docs(system_text)]


@lru_cache(maxsize=1024)
def _context_docs(system_text: str) -> tuple[tuple[str, str, str], ...]:
    """Parsed once per system prompt: every call of one run's steps repeats the same context block."""
    docs: list[tuple[str, str, str]] = []
    for line in system_text.splitlines():
        m = _CONTEXT_LINE.match(line)
        if not m:
            continue
        body = m.group(2).strip()
        title, sep, text = body.partition(": ")
        if not sep:
            title, text = "", body
        docs.append((f"context-{m.group(1)}", title.strip(), text.strip()))
    return tuple(docs)


@lru_cache(maxsize=1024)
def _asks_summary(system_text: str) -> bool:
    """Whether the system prompt asks for a summary (cached: one run's steps repeat the same prompt)."""
    return _SUMMARISE.search(system_text) is not None


@lru_cache(maxsize=64)
def _section_re(start: str, stops: str) -> re.Pattern[str]:
    return re.compile(rf"(?:{start})[ \t]*:[ \t]*(.*?)(?=\n[ \t]*(?:{stops})\b|\Z)", re.I | re.S)


def _section(text: str, start: str, stops: str) -> str:
    r"""Text after the ``start`` label, up to the first ``stops`` label line (both regexes).

    Only spaces and tabs may sit around the colon: an empty section (``"Previous: \nCritique: ..."``)
    stays empty instead of swallowing the next label's text."""
    m = _section_re(start, stops).search(text)
    return m.group(1).strip() if m else ""


class LocalProvider:
    """``LocalProvider(name="local", **options)``; options: ``max_sentences`` (force answer length),
    ``model`` (a label for usage records). Unknown options from YAML are accepted and ignored."""

    def __init__(self, name: str = "local", **options: Any) -> None:
        self.name = name
        self.options = dict(options)
        self.model = str(options.get("model") or MODEL_NAME)
        ms = options.get("max_sentences")
        self.max_sentences = int(ms) if isinstance(ms, int) and ms > 0 else None

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r})"

    # -- public API --------------------------------------------------------------------------------
    async def complete(self, messages: list[Message], **params: Any) -> Completion:
        return self.complete_sync(messages, **params)

    async def stream(self, messages: list[Message], **params: Any) -> AsyncIterator[str]:
        """The same text as :meth:`complete`, word by word."""
        text = self.complete_sync(messages, **params).text
        for piece in _WORD_PIECE.findall(text):
            yield piece

    def complete_sync(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Completion:
        """The whole algorithm, synchronous (it is pure CPU work)."""
        msgs = [m for m in messages if isinstance(m, Mapping)]
        temperature = float(params.get("temperature") or 0.0)
        # only a positive temperature draws from the seeded generator: skip hashing the messages otherwise
        seed = self._seed(msgs, temperature) if temperature > 0 else 0
        system_text = "\n".join(str(m.get("content") or "") for m in msgs if m.get("role") == "system")
        context = parse_context_block(system_text)
        last_idx = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=-1)
        user_text = str(msgs[last_idx].get("content") or "") if last_idx >= 0 else ""
        history = [m for i, m in enumerate(msgs) if i != last_idx and m.get("role") in ("user", "assistant")]
        instruction, question = split_question(user_text)

        fields: dict[str, Any] = {}
        spec = parse_classify_prompt(instruction or user_text)
        # the pattern never crosses a line, so searching the two parts apart finds what the joined text has
        summarise = _asks_summary(system_text) or _SUMMARISE.search(instruction or user_text) is not None
        if summarise and spec is None:
            text = self._summarise(system_text, user_text, history, params.get("max_tokens"))
        elif spec is not None:
            text, fields = self._classify(spec, instruction or user_text, question, history)
        elif _IMPROVE_START.search(instruction) or _IMPROVE_END.search(instruction):
            text = self._improve(instruction, question, history, context)
        elif (rating := parse_rating_prompt(instruction or user_text)) is not None:
            text, fields = self._rate(rating, instruction or user_text, question, history, context)
        else:
            text = self._answer(
                question or user_text, instruction if question else "", history, context, temperature, seed
            )

        finish = "stop"
        max_tokens = params.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens > 0 and count_tokens(text) > max_tokens:
            text, finish = self._truncate(text, max_tokens), "length"
        prompt_tokens = count_message_tokens(msgs)
        completion_tokens = count_tokens(text)
        return Completion(
            text=text,
            fields=fields,
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            model=self.model,
            provider=self.name,
            finish_reason=finish,
        )

    # -- modes ---------------------------------------------------------------------------------------
    @staticmethod
    def _summarise(
        system_text: str, user_text: str, history: Sequence[Mapping[str, Any]], max_tokens: Any
    ) -> str:
        """An extractive summary (whole sentences, facts first) of the transcript in the user message,
        or of the conversation so far when the user asks for one; never an answer from the corpus."""
        m = _BUDGET.search(f"{system_text} {user_text}")
        budget = (
            int(m.group(1)) if m else (max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else 200)
        )
        transcript = messages_of(user_text) if _TRANSCRIPT.search(user_text) else []
        if not transcript:
            body = _SUMMARY_VERB.sub("", user_text, count=1)
            if _SO_FAR.search(user_text) or not body.strip():
                transcript = [dict(m) for m in history]
            else:
                transcript = [{"role": "user", "content": body.strip()}]
        return summarize_messages(transcript, budget, counter=get_counter())

    @staticmethod
    def _classify(
        spec: ClassifySpec, prompt: str, question: str, history: Sequence[Mapping[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        target = question
        if not target:
            # The text to classify is whatever the message holds besides the instruction line(s).
            rest = [ln for ln in prompt.splitlines() if ln.strip() and "classif" not in ln.lower()]
            target = " ".join(rest).strip()
        if not target:
            users = [str(m.get("content") or "") for m in history if m.get("role") == "user"]
            target = users[-1] if users else ""
        label = classify_text(target, spec.choices)
        fields = {f: label for f in spec.fields}
        fields["label"] = label
        return label, fields

    def _rate(
        self,
        rating: RatingSpec,
        prompt: str,
        question: str,
        history: Sequence[Mapping[str, Any]],
        context: list[dict[str, Any]],
    ) -> tuple[str, dict[str, Any]]:
        if rating.aspect == "relevance":
            doc_text = _section(prompt, r"document|passage|text", r"question|query|rate|score|rating")
            q = question or _section(prompt, r"question|query", r"document|passage|rate|score")
            rel = lexical_relevance(q, {"text": doc_text}, corpus.idf)
            value = rating.low + rel * (rating.high - rating.low)
            value = int(value + 0.5) if rating.high - rating.low >= 5 else round(value, 1)
            return (
                f"Score: {value}/{rating.high:g}\nRelevance: the document covers {rel:.0%} of the question.",
                {"score": value},
            )
        answer = _section(
            prompt,
            r"(?:critique|evaluate|review|assess|rate|score|judge)\s+(?:this|the|following)\s+"
            r"(?:answer|response|text|reply)",
            r"rate|score|rating|grade|critique\s*:",
        ) or _section(prompt, r"answer|response", r"rate|score|rating|grade")
        if not answer:
            answers = [str(m.get("content") or "") for m in history if m.get("role") == "assistant"]
            answer = answers[-1] if answers else ""
        q = question or self._first_user(history)
        result = rate_answer(q, answer, context or None)
        text = result.critique(high=rating.high)
        score = parse_score(text, rating.low, rating.high)
        return text, {"score": score}

    def _improve(
        self, prompt: str, question: str, history: Sequence[Mapping[str, Any]], context: list[dict[str, Any]]
    ) -> str:
        previous = _section(
            prompt, r"previous(?:\s+answer)?", r"critique|feedback|improved|question"
        ) or _section(
            prompt,
            r"(?:improve|refine|revise|rewrite)\s+(?:this|the|following)\s+"
            r"(?:answer|response|text)",
            r"critique|feedback|improved|question",
        )
        if not previous:
            answers = [str(m.get("content") or "") for m in history if m.get("role") == "assistant"]
            previous = answers[-1] if answers else ""
        critique = _section(prompt, r"critique|feedback", r"improved|question|previous")
        missing = _MISSING.findall(critique)
        prefer = [w.strip() for chunk in missing for w in chunk.split(",") if w.strip()]
        q = question or self._first_user(history) or previous
        docs = context_or_corpus(q, context)
        if not previous.strip() or previous.lower().startswith("i don't have information"):
            chosen = compose(q, docs, 2)
            return " ".join(c.sentence for c in chosen) if chosen else previous
        # Drop unsupported sentences when that loses none of the question's terms.
        checks = check_answer(previous, context or None)
        kept = [c.sentence for c in checks if c.supported]
        qstems = set(term_set(q))
        if (
            kept
            and len(kept) < len(checks)
            and (term_set(previous) & qstems) <= (term_set(" ".join(kept)) & qstems)
        ):
            base = " ".join(kept)
        else:
            base = previous.strip()
        extra = more_sentences(q, base, docs, k=1, prefer=prefer)
        return " ".join([base] + [c.sentence for c in extra]).strip()

    def _answer(
        self,
        question: str,
        instruction: str,
        history: Sequence[Mapping[str, Any]],
        context: list[dict[str, Any]],
        temperature: float,
        seed: int,
    ) -> str:
        resolved = resolve_followup(question, history) if history else question
        if is_creative_request(resolved):
            return _creative(resolved, temperature, seed)
        recalled = self._from_conversation(resolved, history, context)
        if recalled:
            return recalled
        n = self.max_sentences or self._length(resolved, instruction)
        ratio = 0.25 if n >= 4 else 0.5  # long-form answers may use weaker supporting sentences
        chosen = (
            compose(resolved, context_or_corpus(resolved, context), n, temperature, seed, ratio)
            if context
            else []
        )
        if not chosen:
            chosen = compose(resolved, context_or_corpus(resolved, []), n, temperature, seed, ratio)
        if chosen:
            return " ".join(c.sentence for c in chosen)
        topic = topic_of(resolved) or " ".join(w for w in words(resolved)[:6]) or "that"
        where = "the provided context or the local corpus" if context else "the local corpus"
        return f"I don't have information about {topic} in {where}."

    @staticmethod
    def _from_conversation(
        question: str, history: Sequence[Mapping[str, Any]], context: list[dict[str, Any]]
    ) -> str:
        """The answer quoted from the conversation when it is there ("My name is Alice." then "What is
        my name?"): a statement of the user's (or, failing that, of an earlier reply) that matches the
        question at least as well as any source does. Quoted verbatim, so nothing is invented."""
        if not history:
            return ""
        personal = _PERSONAL.search(question) is not None
        for role, frame in (("user", 'You told me: "{}"'), ("assistant", 'I said earlier: "{}"')):
            docs = [
                {"id": f"turn-{i}", "title": "", "text": str(m.get("content") or "")}
                for i, m in enumerate(history)
                if m.get("role") == role
            ]
            ranked = [c for c in rank_sentences(question, docs) if not c.sentence.rstrip().endswith("?")]
            if not ranked or ranked[0].relevance < 0.6:
                continue
            best = ranked[0]
            if not personal:
                sources = rank_sentences(question, context_or_corpus(question, context))
                if sources and sources[0].relevance >= best.relevance:
                    continue
            return frame.format(best.sentence)
        return ""

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _length(question: str, instruction: str) -> int:
        if _LONG_FORM.search(instruction) or _LONG_FORM.search(question):
            return 5 if _LONGEST_FORM.search(f"{instruction} {question}") else 4
        return {"simple": 1, "medium": 2, "complex": 3}[complexity_of(question)]

    @staticmethod
    def _first_user(history: Sequence[Mapping[str, Any]]) -> str:
        users = [str(m.get("content") or "") for m in history if m.get("role") == "user"]
        return users[0] if users else ""

    @staticmethod
    def _seed(messages: Sequence[Mapping[str, Any]], temperature: float) -> int:
        payload = json.dumps([[m.get("role"), m.get("content")] for m in messages], default=str)
        digest = hashlib.blake2b(f"{payload}|{temperature:.4f}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    @staticmethod
    def _truncate(text: str, max_tokens: int) -> str:
        out: list[str] = []
        for s in sentences(text):
            if count_tokens(" ".join(out + [s])) > max_tokens:
                break
            out.append(s)
        if out:
            return " ".join(out)
        kept: list[str] = []
        for w in text.split():
            if count_tokens(" ".join(kept + [w])) > max_tokens:
                break
            kept.append(w)
        return " ".join(kept)


# -- creative mode -------------------------------------------------------------------------------------
_ADJECTIVES = ("restless", "quiet", "endless", "bright", "patient", "ancient", "silver", "gentle", "wild")
_POEMS = (
    (
        "{Topic}, {a} and {b},",
        "you hold the morning in your light;",
        "{fact}",
        "and still I come back to {topic}.",
    ),
    (
        "I went looking for {topic} at dawn,",
        "{a} as a held breath, {b} as a song;",
        "{fact}",
        "and {topic} was there all along.",
    ),
    (
        "Say {topic} and the room grows {a},",
        "a {b} thought that will not stay;",
        "{fact}",
        "tomorrow {topic} will find a way.",
    ),
)
_STORIES = (
    "Once upon a time there was {topic}, {a} and {b}. {fact} Everyone who met {topic} remembered it, and "
    "that is how the story ends: not with an ending, but with {topic} still there.",
    "Nobody expected {topic} to change anything. It was {a}, and a little {b}. {fact} By evening, "
    "everything was different because of {topic}.",
)


def _creative(request: str, temperature: float, seed: int) -> str:
    """A short verse or story about the request's topic, picked from templates (seeded)."""
    m = re.search(r"\b(?:about|on|of|for)\s+(.+?)[?.!]*$", request, re.I)
    topic = m.group(1).strip() if m else ""
    if not topic:
        kept = [
            w
            for w in words(request)
            if w
            not in {
                "write",
                "compose",
                "poem",
                "story",
                "haiku",
                "song",
                "a",
                "an",
                "the",
                "me",
                "please",
                "short",
                "tell",
            }
        ]
        topic = " ".join(kept[:3]) or "the world"
    rng = random.Random(seed if temperature > 0 else 0)
    a, b = rng.sample(_ADJECTIVES, 2)
    bare = re.sub(r"^(?:the|a|an)\s+", "", topic, flags=re.I)
    about = f"What is {bare}?"
    best = compose(about, context_or_corpus(about, []), 1)
    fact = best[0].sentence if best else ""
    fields = {"topic": topic, "Topic": topic[:1].upper() + topic[1:], "a": a, "b": b}
    if re.search(r"\b(?:story|tale|fable)\b", request, re.I):
        template = _STORIES[rng.randrange(len(_STORIES))]
        return " ".join(template.format(fact=fact, **fields).split())
    if re.search(r"\bhaiku\b", request, re.I):
        return f"{fields['Topic']} at first light\n{a} and {b}, it waits\nthe day leans closer"
    lines = _POEMS[rng.randrange(len(_POEMS))]
    fact_line = (
        (fact.rstrip(".").lower()[:1] + fact.rstrip(".")[1:] + ";") if fact else f"{b} as the hour it began;"
    )
    return "\n".join(line.format(fact=fact_line, **fields) for line in lines)
