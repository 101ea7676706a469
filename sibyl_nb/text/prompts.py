"""Read structured intent out of prompt text, and structured values out of replies.

Shared by ``ai_generation.generation`` (which parses any provider's reply, so real models work
too) and the local provider (which must know what a prompt asks for). Pure regex, no model:

- ``"Classify query type: factual, opinion, or creative"`` -> fields ``query_type`` and ``type``,
  choices ``factual/opinion/creative``;
- ``"Rate quality 0-10"`` / ``"on a scale of 1 to 5"`` -> a rating on that scale;
- a reply's chosen label (:func:`match_choice`) and numeric score (:func:`parse_score`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "ClassifySpec",
    "RatingSpec",
    "parse_classify_prompt",
    "parse_rating_prompt",
    "match_choice",
    "parse_score",
    "split_question",
    "snake_case",
]


@dataclass(frozen=True, slots=True)
class ClassifySpec:
    """What a classification prompt asks: output field names and the allowed labels."""

    subject: str
    fields: tuple[str, ...]
    choices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RatingSpec:
    low: float
    high: float
    aspect: str  # "quality", "relevance", ...


_CLASSIFY_COLON = re.compile(r"\bclassify\b(?P<subject>[^:\n]{0,80}?)\s*:\s*(?P<choices>[^\n]+)", re.I)
_CLASSIFY_AS = re.compile(
    r"\bclassify\b(?P<subject>[^\n]{0,80}?)\s+(?:as|into)\s+(?:one\s+of\s+)?(?:either\s+)?"
    r"(?P<choices>[^\n:]+)",
    re.I,
)
_CHOICE_SPLIT = re.compile(r"\s*(?:,|/|\||;|\bor\b|\band\b)\s*", re.I)
_LEADING = re.compile(r"^(?:the|this|that|a|an|its|the\s+user'?s?|user'?s?)\s+", re.I)
_TRAILING = re.compile(r"\s+(?:as|into|among|between|by|with|from)$", re.I)


def snake_case(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@lru_cache(maxsize=4096)
def parse_classify_prompt(prompt: str) -> ClassifySpec | None:
    """``"Classify query type: factual, opinion, or creative"`` -> ``ClassifySpec(...)``; else ``None``.

    Field names: the subject in snake_case and its last word (``query_type`` and ``type``); "the
    sentiment of this review" names ``sentiment``; with no subject (``"Classify as a, b"``) the
    field is ``label``. ``label`` is always added by the technique as well.
    """
    if not prompt or "classif" not in prompt.lower():
        return None
    m = _CLASSIFY_COLON.search(prompt)
    as_form = False
    if m is None or len(_split_choices(m.group("choices"))) < 2:
        m = _CLASSIFY_AS.search(prompt)
        as_form = True
        if m is None:
            return None
    choices = _split_choices(m.group("choices"))
    if len(choices) < 2:
        return None
    subject = " ".join(m.group("subject").split())
    subject = _TRAILING.sub("", subject)
    if as_form:
        subject = ""  # "Classify this query as a, b": the subject is the thing classified, not an attribute
    if re.search(r"\s+of\s+", subject):
        subject = re.split(r"\s+of\s+", subject, maxsplit=1)[0]
    while _LEADING.match(subject):
        subject = _LEADING.sub("", subject, count=1)
    fields: list[str] = []
    if subject:
        full = snake_case(subject)
        last = snake_case(subject.split()[-1])
        fields = [f for f in dict.fromkeys((full, last)) if f]
    if not fields:
        fields = ["label"]
    return ClassifySpec(subject=subject, fields=tuple(fields), choices=tuple(choices))


def _split_choices(text: str) -> list[str]:
    text = re.split(r"(?<=[a-z0-9\"'])[.?!](?:\s|$)", text.strip(), maxsplit=1)[0]
    out = []
    for raw in _CHOICE_SPLIT.split(text):
        c = raw.strip().strip("\"'`*()[]").strip().rstrip(".?!")
        if c and len(c.split()) <= 4 and c.lower() not in ("either", "one"):
            out.append(c)
    return list(dict.fromkeys(out))


def match_choice(reply: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """The label a reply chose: the choice that occurs first (whole words, any case); ``None`` if none."""
    best: tuple[int, int, str] | None = None
    for c in choices:
        m = re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", reply or "", re.I)
        if m:
            key = (m.start(), -len(c), c)
            if best is None or key < best:
                best = key
    return best[2] if best else None


_SCALE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:-|–|—|to)\s*(\d+(?:\.\d+)?)")
_RATE_WORD = re.compile(r"\b(?:rate|rating|score|grade|evaluate)\b", re.I)
_OUT_OF = re.compile(r"out\s+of\s+(\d+)", re.I)
_ASPECT = re.compile(r"\b(quality|relevance|relevant|accuracy|correctness|helpfulness|clarity)\b", re.I)
_RATE = re.compile(r"\brate\b", re.I)
_NUM = r"(-?\d+(?:\.\d+)?)"
_SCORE_PATTERNS = tuple(
    re.compile(pat, re.I)
    for pat in (
        rf"\bscore\s*[:=]?\s*{_NUM}\s*(?:/\s*{_NUM})?",
        rf"\brating\s*[:=]?\s*{_NUM}\s*(?:/\s*{_NUM})?",
        rf"{_NUM}\s*/\s*{_NUM}",
        rf"{_NUM}\s+out\s+of\s+{_NUM}",
    )
)
_NUM_RE = re.compile(_NUM)
_QUESTION_LABEL = re.compile(r"(?:^|\n)\s*(?:question|query)\s*:\s*", re.I)


@lru_cache(maxsize=4096)
def parse_rating_prompt(prompt: str) -> RatingSpec | None:
    """A prompt asking for a numeric rating ("Rate quality 0-10", "score from 1 to 5") -> its scale."""
    if not prompt:
        return None
    for line in prompt.splitlines():
        if not _RATE_WORD.search(line):
            continue
        scale = _SCALE.search(line[_RATE_WORD.search(line).start() :])  # type: ignore[union-attr]
        out_of = _OUT_OF.search(line)
        aspect_m = _ASPECT.search(line)
        aspect = (aspect_m.group(1).lower() if aspect_m else "quality").replace("relevant", "relevance")
        if scale:
            lo, hi = float(scale.group(1)), float(scale.group(2))
            if hi > lo:
                return RatingSpec(lo, hi, aspect)
        if out_of:
            return RatingSpec(0.0, float(out_of.group(1)), aspect)
        if aspect_m and _RATE.search(line):
            return RatingSpec(0.0, 10.0, aspect)
    return None


def parse_score(text: str, low: float = 0.0, high: float = 10.0) -> float | None:
    """The numeric score in a reply ("Score: 7/10", "7 out of 10", "Rating: 7"), clamped to the scale."""
    if not text:
        return None
    value: float | None = None
    for pat in _SCORE_PATTERNS:
        m = pat.search(text)
        if m:
            value = float(m.group(1))
            denom = m.group(2) if m.lastindex and m.lastindex >= 2 else None
            if denom and float(denom) > 0 and float(denom) != high:
                value = low + (value / float(denom)) * (high - low)
            break
    if value is None:
        for m in _NUM_RE.finditer(text):
            v = float(m.group(1))
            if low <= v <= high:
                value = v
                break
    if value is None:
        return None
    value = min(high, max(low, value))
    return int(value) if float(value).is_integer() else round(value, 2)


@lru_cache(maxsize=4096)
def split_question(prompt: str) -> tuple[str, str]:
    """Split a user message into (instruction, question) at its last ``Question:`` line."""
    matches = list(_QUESTION_LABEL.finditer(prompt or ""))
    if not matches:
        return prompt or "", ""
    m = matches[-1]
    return prompt[: m.start()].strip(), prompt[m.end() :].strip()
