"""Model-free extractive compression and summarisation that keeps the facts (deterministic: same
input, same output).

A conversation's value is in its facts — names, numbers, dates, decisions, preferences — so a
sentence's importance is its **salience** (how many such facts it carries, see :func:`salience`)
plus its centrality (cosine of its TF-IDF vector with the text's centroid) and a small position
prior. Text is only ever cut at clause boundaries: compression and summaries keep whole sentences,
or whole clauses of a long sentence (split at ``, ; :`` and dashes), never a word prefix ending in
"…". So the achieved ratio is at most the one requested and short of it by less than one sentence;
a message too short to compress without losing its one clause keeps that clause whole (its
achieved ratio is reported, not faked).

Words, terms and sentences come from :mod:`sibyl_nb.text.tokenize`, the one tokeniser the local
techniques share. Results are memoised by content, so a message that stays in the compressed level
for ten turns is compressed once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

from ..text.tokenize import STOPWORDS, term_set, terms
from ..text.tokenize import sentences as split_sentences
from .tokens import TokenCounter, content_text, get_counter

__all__ = [
    "split_sentences",
    "split_clauses",
    "salience",
    "score_sentences",
    "compress_text",
    "gist",
    "summarize_messages",
]

_NUMBER = re.compile(r"\d")
_MONTHS = frozenset(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "today",
        "tomorrow",
        "yesterday",
        "tonight",
        "morning",
        "evening",
        "week",
        "weekend",
        "month",
        "year",
    ]
)
# Words that mark a personal fact, a decision or a preference (matched on lower-cased words).
_CUES = frozenset(
    [
        "name",
        "named",
        "call",
        "called",
        "live",
        "lives",
        "living",
        "moved",
        "born",
        "age",
        "old",
        "work",
        "works",
        "job",
        "role",
        "allergic",
        "allergy",
        "prefer",
        "prefers",
        "preferred",
        "favourite",
        "favorite",
        "like",
        "likes",
        "love",
        "loves",
        "hate",
        "hates",
        "dislike",
        "want",
        "need",
        "decided",
        "decide",
        "decision",
        "chose",
        "choose",
        "chosen",
        "agreed",
        "planned",
        "booked",
        "book",
        "booking",
        "meeting",
        "deadline",
        "budget",
        "cost",
        "costs",
        "price",
        "paid",
        "pay",
        "flight",
        "land",
        "lands",
        "arrive",
        "arrives",
        "leave",
        "leaves",
        "move",
        "married",
        "wife",
        "husband",
        "son",
        "daughter",
        "sister",
        "brother",
        "mother",
        "father",
        "friend",
        "partner",
        "dog",
        "cat",
        "password",
        "address",
        "phone",
        "email",
        "birthday",
        "anniversary",
        "appointment",
        "reservation",
        "always",
        "never",
        "must",
        "eat",
        "vegetarian",
        "vegan",
        "remember",
    ]
)
_FILLER = re.compile(
    r"^(ok(ay)?|thanks?( you)?|thank you( so much)?|great|cool|nice|sure|got it|noted|sounds good|"
    r"perfect|alright|hello|hi|hey|good (morning|evening|night))\b[\s!.,]*$",
    re.I,
)
_CLAUSE = re.compile(r"(?<=[,;:])\s+|\s+[—–-]\s+")


def split_clauses(sentence: str) -> list[str]:
    """A sentence's clauses, split after ``, ; :`` and at dashes (each keeps its own punctuation)."""
    parts = [p.strip() for p in _CLAUSE.split(sentence) if p and p.strip()]
    return parts or [sentence]


_NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "i'll",
        "i'd",
        "thanks",
        "thank",
        "ok",
        "okay",
        "yes",
        "no",
        "hi",
        "hello",
        "hey",
        "please",
        "sure",
        "great",
        "perfect",
        "sounds",
        "noted",
        "got",
    ]
)


_CAP_WORD = re.compile(r"\b[A-Z][a-zA-Z'’-]*")


def known_names(text: str) -> frozenset[str]:
    """Capitalised words a text uses past a sentence's first word: its names (so "Python" opening a
    sentence counts as a name when the text also says "about Python")."""
    out = set()
    for sent in split_sentences(text):
        for m in _CAP_WORD.finditer(sent):
            if sent[: m.start()].strip(" \"'("):
                out.add(m.group(0))
    return frozenset(out)


@lru_cache(maxsize=65536)
def salience(text: str, names_in_text: frozenset[str] = frozenset()) -> float:
    """How much fact a sentence or clause carries, in [0, 1]: numbers and dates, names (capitalised
    words that are not ordinary sentence openers), cue words of personal facts, decisions and
    preferences. Filler ("Thanks!", "Sounds good.") scores 0; a piece of one or two words counts half."""
    if not text or _FILLER.match(text.strip()):
        return 0.0
    ws = re.findall(r"[a-z0-9']+", text.lower())
    if not ws:
        return 0.0
    score = 0.0
    if _NUMBER.search(text):
        score += 0.35
    # Capitalised words past the first are names ("Priya", "Haneda", "NH"); a capitalised first word
    # only opens the sentence ("Many travellers ...").
    names = 0
    for m in _CAP_WORD.finditer(text):
        w = m.group(0).lower()
        if w in STOPWORDS or w in _NOT_NAMES:
            continue
        if text[: m.start()].strip(" \"'(") or m.group(0) in names_in_text:
            names += 1
    score += min(2, names) * 0.15
    distinct = set(ws)  # "mays" counts as "may": a plural month is stripped of its trailing s's
    if not _MONTHS.isdisjoint(distinct) or any(w.rstrip("s") in _MONTHS for w in distinct if w.endswith("s")):
        score += 0.15
    cues = sum(map(_CUES.__contains__, ws))
    score += min(2, cues) * 0.18
    if ws[0] in ("i", "my", "we", "our", "i'm", "i've", "i'll"):
        score += 0.05
    if len(ws) < 3:
        score *= 0.5
    return min(1.0, score)


def score_sentences(sentences: Sequence[str], names_in_text: frozenset[str] | None = None) -> list[float]:
    """Importance of each sentence: salience (weighted by how on-topic it is) + 0.5 x centrality +
    a small position prior."""
    n = len(sentences)
    if n == 0:
        return []
    if names_in_text is None:
        names_in_text = known_names(" ".join(sentences))
    bags: list[dict[str, float]] = []
    df: dict[str, int] = {}
    for s in sentences:
        bag: dict[str, float] = {}
        for w in terms(s):
            bag[w] = bag.get(w, 0.0) + 1.0
        for w in bag:
            df[w] = df.get(w, 0) + 1
        bags.append(bag)
    idf = {w: math.log((1 + n) / (1 + d)) + 1.0 for w, d in df.items()}
    centroid: dict[str, float] = {}
    for bag in bags:
        total = sum(bag.values()) or 1.0
        for w, c in bag.items():
            v = bag[w] = c / total * idf[w]  # the bag becomes the sentence's TF-IDF vector
            centroid[w] = centroid.get(w, 0.0) + v
    csq = sum(v * v for v in centroid.values())
    scores = []
    for i, vec in enumerate(bags):
        # centrality against the *other* sentences (leave-one-out), so an off-topic sentence, whose
        # rare words only it uses, scores 0 instead of matching itself
        vsq = sum(v * v for v in vec.values())
        dot = sum(v * (centroid[w] - v) for w, v in vec.items())
        rest = math.sqrt(max(csq - 2 * sum(v * centroid[w] for w, v in vec.items()) + vsq, 0.0))
        central = dot / (math.sqrt(vsq) * rest) if vsq and rest else 0.0
        central = max(central, 0.0)
        # a fact counts fully when the sentence is on the text's topic, half when it shares nothing
        topical = 0.5 + 0.5 * min(1.0, 4.0 * central)
        scores.append(
            salience(sentences[i], names_in_text) * topical + 0.5 * central + 0.1 / math.sqrt(1.0 + i)
        )
    return scores


@lru_cache(maxsize=8192)
def _analyse(text: str, encoding: str) -> tuple[tuple[str, int, float], ...]:
    """(sentence, tokens, score) per sentence, memoised by content."""
    counter = get_counter(encoding=encoding)
    sents = split_sentences(text)
    scores = score_sentences(sents)
    return tuple((s, counter.count(s), sc) for s, sc in zip(sents, scores, strict=True))


def _best_clauses(counter: TokenCounter, sentence: str, room: int) -> str:
    """The sentence's most salient whole clauses (in order) within ``room`` tokens, or ""."""
    clauses = split_clauses(sentence)
    if len(clauses) < 2 or room <= 0:
        return ""
    ranked = sorted(range(len(clauses)), key=lambda i: (-salience(clauses[i]), i))
    chosen: list[int] = []
    used = 0
    for i in ranked:
        if salience(clauses[i]) <= 0:
            break  # a clause alone must carry a fact ("more or less" does not)
        t = counter.count(clauses[i]) + 1
        if used + t <= room:
            chosen.append(i)
            used += t
    text = " ".join(clauses[i] for i in sorted(chosen)).rstrip(",;: ")
    return text if not text or text.endswith((".", "!", "?")) else text + "."


@lru_cache(maxsize=8192)
def _compress(text: str, ratio: float, encoding: str) -> tuple[str, int]:
    counter = get_counter(encoding=encoding)
    total = counter.count(text)
    target = int(round(ratio * total))
    if total <= target:
        return text, total
    analysed = _analyse(text, encoding)
    order = sorted(range(len(analysed)), key=lambda i: (-analysed[i][2], i))
    chosen: dict[int, str] = {}
    used = 0
    for i in order:  # best first: the sentence whole, else its most salient clauses
        s, t, _ = analysed[i]
        if used + t <= target:
            chosen[i] = s
            used += t
        elif target - used >= 3:
            part = _best_clauses(counter, s, target - used)
            if part:
                chosen[i] = part
                used += counter.count(part)
    names = known_names(text)
    if analysed and not any(salience(chosen[i], names) > 0 for i in chosen):
        # No fact survived ("Hi!" fits, "My name is Priya Raman ..." does not): a short message
        # keeps its most important clause whole rather than turn into a prefix ("I land at
        # Haneda…") or into filler; the achieved ratio says so.
        best = next((i for i in order if salience(analysed[i][0], names) > 0), order[0])
        clauses = split_clauses(analysed[best][0])
        chosen = {best: max(clauses, key=lambda c: (salience(c, names), -clauses.index(c)))}
    out = " ".join(chosen[i] for i in sorted(chosen))
    n = counter.count(out)
    while n > max(target, 1) and len(chosen) > 1:  # joins can add a token or two: drop the weakest piece
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
_LABEL = re.compile(r"^(User|Assistant|System|Tool):\s+")
_MAX_ITEM_TOKENS = 45  # a longer sentence enters a summary by its clauses


@lru_cache(maxsize=65536)
def _tokens(counter: TokenCounter, piece: str) -> int:
    """``counter.count(piece)``, memoised: a summary re-ranks the same sentences turn after turn."""
    return counter.count(piece)


@lru_cache(maxsize=65536)
def _term_count(piece: str) -> int:
    return len(terms(piece))


@lru_cache(maxsize=8192)
def _items(text: str, counter: TokenCounter) -> tuple[tuple[str, float], ...]:
    """(piece, salience) for each sentence of a message that is not filler, long sentences as their
    clauses; memoised by content, since a message sits in the summary level for many turns."""
    out = []
    for s in split_sentences(text):
        pieces = [s] if _tokens(counter, s) <= _MAX_ITEM_TOKENS else split_clauses(s)
        for p in pieces:
            sal = salience(p)
            if sal <= 0 and _term_count(p) < 2:
                continue  # filler
            out.append((p, sal))
    return tuple(out)


@lru_cache(maxsize=8192)
def _prior_line(line: str) -> tuple[tuple[str, str, float, float], ...]:
    """(label or "", sentence, rank, salience) for each sentence of one line of an earlier summary."""
    out = []
    for s in split_sentences(line):
        lab = ""
        m = _LABEL.match(s)
        if m:
            lab, s = m.group(1), s[m.end() :]
        sal = salience(s)
        out.append((lab, s, sal + 0.02, sal))
    return tuple(out)


def summarize_messages(
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int = 200,
    *,
    prior: str = "",
    counter: TokenCounter | None = None,
) -> str:
    """A deterministic extractive summary of ``messages`` (after an earlier summary ``prior``) in at
    most ``max_tokens`` tokens, made of whole sentences and clauses.

    Every sentence of ``prior`` and of the messages competes on salience (facts first), with a
    small bonus for the user's own words and for recency; a piece that repeats what is already
    chosen is skipped. The chosen pieces print in chronological order under their speaker's label
    ("User: ... Assistant: ..."), so a fact folded in early survives later folds for as long as it
    outranks newer ones: a rolling summary keeps facts instead of keeping the newest text.
    """
    counter = counter or get_counter()
    if max_tokens <= 0:
        return ""
    # (rank, position, label, piece) for every candidate piece
    cands: list[tuple[float, int, str, str, float]] = []
    pos = 0
    label = ""
    # line by line: a prior made of block summaries (one a line) is parsed once per block, memoised
    for line in (prior or "").strip().splitlines():
        for lab, s, rank, sal in _prior_line(line):
            label = lab or label  # an unlabelled sentence continues the previous speaker's
            cands.append((rank, pos, label, s, sal))
            pos += 1
    n = len(messages)
    for i, msg in enumerate(messages):
        role = str(msg.get("role") or "")
        label = _ROLE_LABEL.get(role, role.title() or "Message")
        recency = 0.05 * (i + 1) / max(n, 1)
        bonus = 0.1 if role == "user" else 0.0
        for piece, sal in _items(content_text(msg.get("content")), counter):
            cands.append((sal + bonus + recency, pos, label, piece, sal))
            pos += 1
    order = sorted(cands, key=itemgetter(0, 1), reverse=True)  # by rank, then newest (positions differ)
    facts = [c for c in order if c[4] > 0]
    # A summary keeps facts; filler enters only when there is no fact at all (then the best piece).
    order = facts or order[:1]
    chosen: list[tuple[int, str, str]] = []
    seen: list[frozenset[str]] = []
    used = 0
    for _rank, p, lab, piece, _sal in order:
        if used + 3 > max_tokens:
            break  # not even an empty piece fits
        t = _tokens(counter, piece) + 3  # label and joins, re-checked on the final text
        if used + t > max_tokens:
            continue
        ts = term_set(piece)
        if lab != "User" and ts and any(ts <= other for other in seen):
            continue  # says nothing new (a reply echoing the user's fact); the user's own words stay
        chosen.append((p, lab, piece))
        seen.append(ts)
        used += t
    text = _render(chosen)
    while chosen and counter.count(text) > max_tokens:
        chosen.pop()  # the lowest-ranked pick (chosen keeps rank order)
        text = _render(chosen)
    return text


def _render(chosen: Sequence[tuple[int, str, str]]) -> str:
    parts: list[str] = []
    last = None
    for _, label, piece in sorted(chosen):
        if not piece.endswith((".", "!", "?")):
            piece = piece.rstrip(",;:") + "."
        if label and label != last:
            parts.append(f"{label}: {piece}")
        else:
            parts.append(piece)
        last = label
    return " ".join(parts)
