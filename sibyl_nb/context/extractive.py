"""Model-free extractive compression and summarisation (deterministic: same input, same output).

Sentence importance = centrality (cosine of the sentence's TF-IDF vector with the text's centroid,
IDF over the text's own sentences) + a position prior (openings carry the topic). Compression keeps
the best sentences, in their original order, until ``ratio`` of the text's tokens is reached, and
fills the last gap with a word-boundary prefix of the next-best sentence, so the achieved ratio is
within ``RATIO_TOLERANCE`` of the request for texts of ``TOLERANCE_MIN_TOKENS`` tokens or more.

Results are memoised by content string, so a message that stays in the compressed level for ten
turns is compressed once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from .tokens import TokenCounter, content_text, get_counter

__all__ = [
    "split_sentences",
    "score_sentences",
    "compress_text",
    "gist",
    "summarize_messages",
    "RATIO_TOLERANCE",
    "TOLERANCE_MIN_TOKENS",
]

RATIO_TOLERANCE = 0.05
TOLERANCE_MIN_TOKENS = 60

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")
_STOP_WORDS = """a an and are as at be been but by can could did do does for from had has have he her his
how i if in into is it its just me more most my no not of on or our she so some such than that the their
them then there these they this those to too us very was we were what when where which who why will with
would you your also about up out over only own same s t don should now"""
_STOP = frozenset(_STOP_WORDS.split())


def split_sentences(text: str) -> list[str]:
    """Split on sentence punctuation and line breaks; keeps each sentence's own punctuation."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _terms(sentence: str) -> list[str]:
    return [w for w in _WORD.findall(sentence.lower()) if w not in _STOP]


def score_sentences(sentences: Sequence[str]) -> list[float]:
    """Importance of each sentence in [0, ~1]: 0.7 x centrality + 0.3 x position prior."""
    n = len(sentences)
    if n == 0:
        return []
    findall, stop = _WORD.findall, _STOP
    bags: list[dict[str, float]] = []
    df: dict[str, int] = {}
    for s in sentences:
        bag: dict[str, float] = {}
        for w in findall(s.lower()):
            if w not in stop:
                bag[w] = bag.get(w, 0.0) + 1.0
        for w in bag:
            df[w] = df.get(w, 0) + 1
        bags.append(bag)
    log = math.log
    idf = {w: log((1 + n) / (1 + d)) + 1.0 for w, d in df.items()}
    centroid: dict[str, float] = {}
    for bag in bags:
        total = sum(bag.values()) or 1.0
        for w, c in bag.items():
            v = bag[w] = c / total * idf[w]  # the bag becomes the sentence's TF-IDF vector
            centroid[w] = centroid.get(w, 0.0) + v
    cnorm = math.sqrt(sum(v * v for v in centroid.values())) or 1.0
    scores = []
    for i, vec in enumerate(bags):
        vnorm = math.sqrt(sum(v * v for v in vec.values()))
        central = sum(v * centroid[w] for w, v in vec.items()) / (vnorm * cnorm) if vnorm else 0.0
        scores.append(0.7 * central + 0.3 / math.sqrt(1.0 + i))
    return scores


@lru_cache(maxsize=8192)
def _analyse(text: str, encoding: str) -> tuple[tuple[str, int, float], ...]:
    """(sentence, tokens, score) per sentence, memoised by content."""
    counter = get_counter(encoding=encoding)
    sents = split_sentences(text)
    scores = score_sentences(sents)
    return tuple((s, counter.count(s), sc) for s, sc in zip(sents, scores, strict=True))


def _word_prefix(counter: TokenCounter, sentence: str, max_tokens: int) -> str:
    cut = counter.truncate(sentence, max_tokens)
    if len(cut) < len(sentence):
        space = cut.rfind(" ")
        cut = cut[:space] if space > 0 else ""
    return cut.rstrip(" ,;:")


@lru_cache(maxsize=8192)
def _compress(text: str, ratio: float, encoding: str) -> tuple[str, int]:
    counter = get_counter(encoding=encoding)
    total = counter.count(text)
    target = int(round(ratio * total))
    if total <= target:
        return text, total
    if target <= 0:
        return "", 0
    analysed = _analyse(text, encoding)
    order = sorted(range(len(analysed)), key=lambda i: (-analysed[i][2], i))
    chosen: dict[int, str] = {}
    used = 0
    for i in order:
        s, t, _ = analysed[i]
        if used + t <= target:
            chosen[i] = s
            used += t
    gap = target - used
    if gap >= 2:  # fill with a prefix of the best sentence left out
        for i in order:
            if i not in chosen:
                part = _word_prefix(counter, analysed[i][0], gap)
                if part:
                    chosen[i] = part + "…"
                break
    out = " ".join(chosen[i] for i in sorted(chosen))
    n = counter.count(out)
    while n > target and len(chosen) > 1:  # joins can add a token or two: drop the weakest piece
        weakest = min(chosen, key=lambda i: (analysed[i][2], -i))
        del chosen[weakest]
        out = " ".join(chosen[i] for i in sorted(chosen))
        n = counter.count(out)
    return out, n


def compress_text(text: str, ratio: float, counter: TokenCounter | None = None) -> tuple[str, int]:
    """(compressed text, its tokens) keeping about ``ratio`` of the tokens; see module docstring."""
    counter = counter or get_counter()
    ratio = min(1.0, max(0.0, float(ratio)))
    if not text:
        return "", 0
    return _compress(text, round(ratio, 4), counter.requested)


def gist(text: str, counter: TokenCounter | None = None) -> tuple[str, float, int]:
    """The single most important sentence of ``text``: (sentence, score, tokens)."""
    counter = counter or get_counter()
    return _gist(text, counter.requested) if text else ("", 0.0, 0)


@lru_cache(maxsize=16384)
def _gist(text: str, encoding: str) -> tuple[str, float, int]:
    analysed = _analyse(text, encoding)
    if not analysed:
        return "", 0.0, 0
    best = max(range(len(analysed)), key=lambda i: (analysed[i][2], -i))
    s, t, sc = analysed[best]
    return s, sc, t


_ROLE_LABEL = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}


def summarize_messages(
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int = 200,
    *,
    prior: str = "",
    counter: TokenCounter | None = None,
) -> str:
    """A deterministic extractive summary of ``messages`` in at most ``max_tokens`` tokens.

    Each message contributes its most important sentence ("User: ...", "Assistant: ..."); the
    most salient and most recent are chosen first and printed in chronological order. ``prior``
    (an earlier summary) is kept in front, cut to half the budget when there are new messages.
    """
    counter = counter or get_counter()
    if max_tokens <= 0:
        return ""
    prior = (prior or "").strip()
    budget = max_tokens
    head = ""
    if prior:
        head = counter.truncate(prior, budget // 2 if messages else budget)
        budget -= counter.count(head) + (1 if messages else 0)
    items: list[tuple[float, int, str, int]] = []
    n = len(messages)
    for i, m in enumerate(messages):
        text = content_text(m.get("content"))
        s, sc, st = gist(text, counter)
        if not s:
            continue
        label = f"{_ROLE_LABEL.get(str(m.get('role')), str(m.get('role') or 'Message').title())}:"
        recency = 0.5 + 0.5 * (i + 1) / n
        bonus = 0.1 if m.get("role") == "user" else 0.0
        # Label + sentence + joining space; exact counts are re-checked on the final text below.
        items.append((sc * recency + bonus, i, f"{label} {s}", counter.count_small(label) + st + 1))
    items.sort(key=lambda x: (-x[0], -x[1]))
    chosen: list[tuple[int, str]] = []
    used = 0
    for _, i, line, t in items:
        if used + t <= budget:
            chosen.append((i, line))
            used += t
    if not chosen and items and budget > 0:  # nothing fits whole: cut the best line
        _, i, line, _ = items[0]
        chosen.append((i, _word_prefix(counter, line, budget - 1) + "…"))
    body = " ".join(line for _, line in sorted(chosen))
    text = f"{head} {body}".strip() if head else body
    while counter.count(text) > max_tokens and chosen:
        chosen.pop()  # pop the lowest-ranked pick (chosen keeps rank order)
        body = " ".join(line for _, line in sorted(chosen))
        text = f"{head} {body}".strip() if head else body
    return counter.truncate(text, max_tokens)
