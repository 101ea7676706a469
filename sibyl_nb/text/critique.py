"""A transparent 0-10 quality rubric for an answer, used by the local provider's "Rate ... 0-10".

Three parts, each explainable in the critique text:

- coverage (0-4): share of the question's content terms the answer mentions;
- grounding (0-3): share of the answer's sentences supported by the sources (see :mod:`.support`);
- completeness (0-3): one point per supported, on-topic sentence beyond the first.

So a one-sentence grounded answer scores 7, and each further supported sentence adds a point up
to 10; the local provider's "Improve" adds such sentences, which is why a critique/refine loop
converges within a few rounds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .support import check_answer
from .tokenize import STOPWORDS, expand_contractions, stem, term_set, words

__all__ = ["Rating", "rate_answer", "is_refusal"]

_REFUSAL = re.compile(
    r"\b(?:i\s+(?:do\s+not|don't)\s+(?:have|know)|no\s+information|cannot\s+answer|"
    r"not\s+enough\s+information)\b",
    re.I,
)


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text or ""))


@dataclass(slots=True)
class Rating:
    score: int
    coverage: float
    grounding: float
    completeness: int
    sentences: int
    supported: int
    missing: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)

    def critique(self, high: float = 10) -> str:
        """The reply text: ``Score: N/10`` first (what parsers look for), then one line per part."""
        scaled = self.score if high == 10 else round(self.score * high / 10, 1)
        lines = [
            f"Score: {scaled}/{high:g}",
            f"Coverage: {self.coverage:.0%} of the question's key terms are addressed.",
            f"Grounding: {self.supported} of {self.sentences} sentences are supported by the sources.",
        ]
        if self.completeness < 3:
            lines.append(
                f"Completeness: {self.completeness}/3 - add more supporting detail from the sources."
            )
        else:
            lines.append("Completeness: 3/3 - the answer gives several supporting facts.")
        if self.missing:
            lines.append("Missing: " + ", ".join(self.missing))
        if self.unsupported:
            lines.append("Unsupported: " + " | ".join(self.unsupported))
        return "\n".join(lines)


def _question_words(question: str) -> list[str]:
    return list(dict.fromkeys(w for w in words(expand_contractions(question)) if w not in STOPWORDS))


def rate_answer(question: str, answer: str, docs: Sequence[Mapping[str, Any]] | None) -> Rating:
    """Score ``answer`` to ``question`` against ``docs`` (the corpus when ``docs`` is empty)."""
    if not answer.strip() or is_refusal(answer):
        return Rating(0, 0.0, 0.0, 0, 0, 0, _question_words(question))
    qwords = _question_words(question)
    aterms = term_set(answer)
    covered = [w for w in qwords if stem(w) in aterms]
    coverage = len(covered) / len(qwords) if qwords else 1.0
    checks = check_answer(answer, docs)
    n = len(checks)
    supported = [c for c in checks if c.supported]
    grounding = len(supported) / n if n else 0.0
    qstems = {stem(w) for w in qwords}
    on_topic = [c for c in supported if not qstems or term_set(c.sentence) & qstems]
    completeness = min(3, max(0, len(on_topic) - 1))
    total = 4 * coverage + 3 * grounding + completeness
    return Rating(
        score=int(total + 0.5),
        coverage=round(coverage, 3),
        grounding=round(grounding, 3),
        completeness=completeness,
        sentences=n,
        supported=len(supported),
        missing=[w for w in qwords if w not in covered],
        unsupported=[c.sentence for c in checks if not c.supported],
    )
