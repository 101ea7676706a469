"""Query understanding without a model: topic phrases, follow-up resolution, expansion, decomposition.

Rules, not learning: they are meant to be predictable. ``resolve_followup`` is what lets "What's it
used for?" after "What is Python?" become "What is Python used for?" for retrieval and for the
local provider alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from .tokenize import STOPWORDS, expand_contractions, normalise, wordlist, words

__all__ = [
    "THESAURUS",
    "ACRONYMS",
    "topic_of",
    "resolve_followup",
    "expand_query",
    "decompose_query",
    "messages_of",
    "user_turns",
    "entities",
]

THESAURUS: dict[str, tuple[str, ...]] = {
    "use": ("application", "purpose"),
    "uses": ("applications", "purposes"),
    "used": ("applied", "employed"),
    "create": ("develop", "invent"),
    "created": ("developed", "invented"),
    "creator": ("inventor", "author"),
    "invented": ("created", "designed"),
    "fast": ("quick", "performant"),
    "slow": ("sluggish", "inefficient"),
    "speed": ("performance", "latency"),
    "performance": ("speed", "efficiency"),
    "build": ("develop", "construct"),
    "error": ("failure", "exception"),
    "errors": ("failures", "exceptions"),
    "bug": ("defect", "fault"),
    "search": ("retrieval", "lookup"),
    "find": ("retrieve", "locate"),
    "document": ("text", "passage"),
    "documents": ("texts", "passages"),
    "answer": ("response", "reply"),
    "question": ("query", "request"),
    "query": ("question", "request"),
    "improve": ("enhance", "refine"),
    "best": ("top", "recommended"),
    "benefits": ("advantages", "strengths"),
    "advantages": ("benefits", "strengths"),
    "disadvantages": ("drawbacks", "weaknesses"),
    "problem": ("issue", "difficulty"),
    "problems": ("issues", "difficulties"),
    "learn": ("study", "master"),
    "example": ("sample", "illustration"),
    "examples": ("samples", "illustrations"),
    "big": ("large", "huge"),
    "large": ("big", "huge"),
    "small": ("compact", "little"),
    "start": ("begin", "launch"),
    "history": ("origin", "background"),
    "work": ("function", "operate"),
    "works": ("functions", "operates"),
    "popular": ("widely used", "common"),
    "difference": ("distinction", "contrast"),
    "differences": ("distinctions", "contrasts"),
    "compare": ("contrast", "weigh"),
    "model": ("system", "network"),
    "models": ("systems", "networks"),
    "store": ("save", "persist"),
    "combine": ("merge", "fuse"),
    "rank": ("order", "score"),
    "ranking": ("ordering", "scoring"),
    "split": ("divide", "segment"),
    "method": ("technique", "approach"),
    "technique": ("method", "approach"),
    "techniques": ("methods", "approaches"),
    "tool": ("utility", "instrument"),
    "tools": ("utilities", "instruments"),
    "library": ("package", "module"),
    "libraries": ("packages", "modules"),
    "package": ("library", "module"),
    "packages": ("libraries", "modules"),
    "framework": ("toolkit", "platform"),
    "data": ("information", "records"),
    "task": ("job", "activity"),
    "tasks": ("jobs", "activities"),
    "write": ("compose", "author"),
    "program": ("software", "application"),
    "programming": ("coding", "development"),
    "language": ("programming language", "tongue"),
    "released": ("published", "launched"),
    "release": ("publish", "launch"),
    "workflow": ("pipeline", "process"),
    "workflows": ("pipelines", "processes"),
    "pipeline": ("workflow", "process"),
    "graph": ("network", "diagram"),
    "memory": ("history", "storage"),
    "conversation": ("dialogue", "chat"),
    "context": ("background", "surroundings"),
    "important": ("key", "essential"),
    "why": ("for what reason",),
    "how": ("in what way",),
}

ACRONYMS: dict[str, str] = {
    "rag": "retrieval-augmented generation",
    "llm": "large language model",
    "llms": "large language models",
    "ml": "machine learning",
    "ai": "artificial intelligence",
    "nlp": "natural language processing",
    "dag": "directed acyclic graph",
    "api": "application programming interface",
    "rrf": "reciprocal rank fusion",
    "mmr": "maximal marginal relevance",
    "gpu": "graphics processing unit",
    "ttl": "time to live",
    "pypi": "python package index",
    "gil": "global interpreter lock",
    "jvm": "java virtual machine",
}

_QWORDS = ("what", "who", "when", "where", "why", "how", "which", "whose", "whom")
_AUX = (
    "is",
    "are",
    "was",
    "were",
    "does",
    "do",
    "did",
    "can",
    "could",
    "should",
    "will",
    "would",
    "has",
    "have",
    "had",
    "may",
    "might",
    "must",
    "shall",
)
_VERBISH = frozenset(
    wordlist("""used made written known built done called run go work works compare differ mean
means have has get gets do does make makes become created invented designed released developed started
begun begin began founded need needs help helps""")
)
_CONNECTORS = frozenset({"van", "von", "de", "der", "da", "di", "la", "le", "of", "and", "&"})
_GENERIC_HEADS = frozenset(
    wordlist("""language languages tool tools library libraries framework frameworks one ones
thing things technique techniques method methods model models approach approaches company person topic
concept idea system systems project projects package packages algorithm algorithms database databases
technology technologies platform service product""")
)
_PRONOUN_RE = re.compile(r"\b(it|they|them|he|she|him|its|their|theirs|his|her)\b", re.I)
_DEMONSTRATIVE_RE = re.compile(
    r"\b(this|that|these|those)\s+([A-Za-z]+)\b|\b(this|that)(?=\s*[?.!]*\s*$)", re.I
)
_ELLIPSIS_RE = re.compile(
    r"^\s*(?:and\s+)?(?:what|how)\s+about\s+(.+?)\s*[?.!]*\s*$|^\s*and\s+(.+?)\s*[?.!]*\s*$", re.I
)
_ROLE_WORDS = frozenset({"user", "assistant", "system", "human", "ai", "bot", "q", "a"})
_MORE_WORDS = frozenset(
    wordlist("""tell me more details detail examples example give some please go on and
elaborate explain expand further continue""")
)


# -- conversation helpers -------------------------------------------------------------------------
def messages_of(history: Any) -> list[dict[str, str]]:
    """Normalise a conversation: message dicts, plain strings (user turns), or a JSON/``role: text`` string."""
    if history is None:
        return []
    if isinstance(history, str):
        return _parse_history_text(history)
    if isinstance(history, Mapping):
        history = history.get("messages") or history.get("history") or []
    out: list[dict[str, str]] = []
    if isinstance(history, Iterable):
        for m in history:
            if isinstance(m, Mapping):
                role = str(m.get("role") or "user")
                content = m.get("content")
                if isinstance(content, str) and content.strip():
                    out.append({"role": role, "content": content})
            elif isinstance(m, str) and m.strip():
                out.append({"role": "user", "content": m})
    return out


def _parse_history_text(text: str) -> list[dict[str, str]]:
    import ast
    import json

    stripped = text.strip()
    if not stripped:
        return []
    if stripped[0] in "[{":
        for loader in (json.loads, ast.literal_eval):  # literal_eval parses data only, never code
            try:
                return messages_of(loader(stripped))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
    out: list[dict[str, str]] = []
    for line in stripped.splitlines():
        m = re.match(r"^\s*(user|assistant|system|human|ai|bot)\s*[:>]\s*(.+)$", line, re.I)
        if m:
            role = {"human": "user", "ai": "assistant", "bot": "assistant"}.get(
                m.group(1).lower(), m.group(1).lower()
            )
            out.append({"role": role, "content": m.group(2).strip()})
        elif out and line.strip():
            out[-1]["content"] += " " + line.strip()
        elif line.strip():
            out.append({"role": "user", "content": line.strip()})
    return out


def user_turns(history: Any, current: str | None = None) -> list[str]:
    """Previous user messages, oldest first, without a trailing copy of ``current``."""
    turns = [m["content"] for m in messages_of(history) if m["role"] == "user"]
    if current is not None and turns and normalise(turns[-1]) == normalise(current):
        turns = turns[:-1]
    return turns


# -- topic -------------------------------------------------------------------------------------------
def _clean(text: str) -> str:
    return re.sub(r"[?!.]+\s*$", "", expand_contractions(text.strip())).strip()


def _noun_phrase(phrase: str) -> str:
    """Leading noun phrase of ``phrase``: drop articles, stop at verbs and at prepositions other than ``of``."""
    toks = re.findall(r"[A-Za-z0-9][\w+#.'-]*", phrase)
    out: list[str] = []
    for i, tok in enumerate(toks):
        low = tok.lower().rstrip(".")
        if not out and low in ("a", "an", "the", "some", "your", "my", "our"):
            continue
        if low == "of" and out and i + 1 < len(toks):
            out.append(tok)
            continue
        named = tok[0].isupper() and low not in STOPWORDS  # "Who designed Go?": Go is a name, not a verb
        if (
            (low in _VERBISH and not named)
            or (low in STOPWORDS and low not in _CONNECTORS)
            or (low.endswith("ed") and len(low) > 4 and out and not named)
        ):
            break
        out.append(tok.rstrip("."))
    while out and out[-1].lower() in _CONNECTORS:
        out.pop()
    return " ".join(out)


_TOPIC_PATTERNS = (
    re.compile(r"^(?:what|who|which)\s+(?:is|are|was|were)\s+(.+)$", re.I),
    re.compile(
        r"^(?:tell\s+me\s+(?:more\s+)?about|explain|describe|define|what\s+about|how\s+about|"
        r"information\s+(?:on|about))\s+(.+)$",
        re.I,
    ),
    re.compile(
        r"^(?:who|what)\s+(?:created|invented|designed|made|wrote|founded|built|developed|started)\s+(.+)$",
        re.I,
    ),
    re.compile(r"^(?:how|why|when|where)\s+(?:does|do|did|is|are|was|were|can|should|would)\s+(.+)$", re.I),
    re.compile(r"^(?:is|are|was|were|does|do|did|can)\s+(.+)$", re.I),
)


def _proper_run(toks: Sequence[str]) -> str:
    """The first capitalised run (a proper noun such as "Guido van Rossum"), skipping function words."""
    run: list[str] = []
    for i, tok in enumerate(toks):
        low = tok.lower()
        proper = (
            tok[0].isupper()
            and low not in STOPWORDS
            and low not in _QWORDS
            and (low not in _VERBISH or i > 0)  # past the first word a capital marks a name ("Go")
            and low not in _ROLE_WORDS
        )
        connector = bool(run) and low in _CONNECTORS and i + 1 < len(toks) and toks[i + 1][0].isupper()
        if proper or connector:
            run.append(tok)
        elif run:
            break
    return " ".join(run)


def topic_of(text: str) -> str:
    """The main noun phrase of a question: "What is machine learning?" -> "machine learning"."""
    return _topic_of(text or "")


@lru_cache(maxsize=8192)
def _topic_of(text: str) -> str:
    """Cached by text: ranking, composing and resolving ask for the same question's topic several times."""
    clean = _clean(text)
    if not clean:
        return ""
    for i, pat in enumerate(_TOPIC_PATTERNS):
        m = pat.match(clean)
        if m:
            np_ = _noun_phrase(m.group(1))
            if (
                np_
                and not _PRONOUN_RE.fullmatch(np_)
                and np_.lower() not in ("this", "that", "these", "those")
            ):
                proper = _proper_run(np_.split()) if i >= 3 else ""
                return proper or np_
    toks = re.findall(r"[A-Za-z0-9][\w+#'-]*", clean)
    proper = _proper_run(toks)
    if proper:
        return proper
    # Longest run of content words.
    best: list[str] = []
    cur: list[str] = []
    for tok in toks + ["."]:
        low = tok.lower()
        if low not in STOPWORDS and low not in _VERBISH and low != "." and low not in _QWORDS:
            cur.append(tok)
        else:
            if len(cur) > len(best):
                best = cur
            cur = []
    return " ".join(best)


# -- follow-ups -------------------------------------------------------------------------------------
def _possessive(topic: str) -> str:
    return topic + ("'" if topic.endswith("s") else "'s")


_PERSON_PRONOUNS = frozenset({"he", "she", "him", "his", "her"})
# "there" as a place ("the weather there"), not the existential "there is" / "is there a ...".
_PLACE_RE = re.compile(
    r"(?<!\bis\s)(?<!\bare\s)(?<!\bwas\s)(?<!\bwere\s)\bthere\b(?!\s+(?:is|are|was|were|be|been|will|'s)\b)",
    re.I,
)
_PLACE_BEFORE = frozenset({"in", "at", "to", "from", "near", "visit", "visiting", "visited"})


def entities(history: Any) -> list[tuple[str, str]]:
    """Named entities of the conversation, newest message first (in order of mention within one):
    (name, kind), kind ``person`` (two or more capitalised words, "Guido van Rossum"), ``place`` (a
    name after in/at/to/from) or ``thing``. Both the user's and the assistant's turns count: "he"
    may be someone the assistant named."""
    found: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for m in reversed(messages_of(history)):
        for chunk in re.split(r"[,;:()]|\s+and\s+|(?<=[.!?])\s+", m["content"]):
            toks = re.findall(r"[A-Za-z0-9][\w+#'-]*", chunk)
            i = 0
            while i < len(toks):
                run = _proper_run(toks[i:]) if toks[i][0].isupper() else ""
                n = len(run.split())
                if run and toks[i : i + n] == run.split() and (i > 0 or toks[i].lower() not in _VERBISH):
                    before = toks[i - 1].lower() if i > 0 else ""
                    kind = "place" if before in _PLACE_BEFORE else ("person" if n >= 2 else "thing")
                    key = run.lower()
                    if key in _ROLE_WORDS:
                        pass
                    elif key not in seen:
                        seen[key] = len(found)
                        found.append((run, kind))
                    elif kind != "thing" and found[seen[key]][1] == "thing":
                        found[seen[key]] = (found[seen[key]][0], kind)  # "to Tokyo" says it is a place
                    i += n
                else:
                    i += 1
    return found


def _substitute(question: str, topic: str, person: str = "", place: str = "") -> str:
    def pron(m: re.Match[str]) -> str:
        low = m.group(1).lower()
        who = person if (person and low in _PERSON_PRONOUNS) else topic
        return _possessive(who) if low in ("its", "their", "theirs", "his") else who

    def demo(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            noun = m.group(2).lower()
            if noun in _GENERIC_HEADS:
                return topic
            return m.group(0)
        return topic

    out = _DEMONSTRATIVE_RE.sub(demo, question)
    out = _PRONOUN_RE.sub(pron, out)
    if place:

        def there(m: re.Match[str]) -> str:
            before = out[: m.start()].lower()
            if re.search(r"\b(?:in|at|to|from|near)\s*$", before):
                return place
            moving = re.search(
                r"\b(?:get|go|going|travel|fly|flying|drive|walk|move|come|take)\b[^.?!]*$", before
            )
            return f"to {place}" if moving else f"in {place}"

        out = _PLACE_RE.sub(there, out)
    return out


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _needs_context(question: str) -> bool:
    clean = _clean(question)
    if _PRONOUN_RE.search(clean) or _ELLIPSIS_RE.match(question) or _PLACE_RE.search(clean):
        return True
    m = _DEMONSTRATIVE_RE.search(clean + "?")
    if m and (m.group(2) is None or m.group(2).lower() in _GENERIC_HEADS):
        return True
    toks = set(words(clean))
    return bool(toks) and toks <= _MORE_WORDS


def resolve_followup(question: str, history: Any) -> str:
    """Rewrite a follow-up so it stands alone, using the conversation so far.

    it/they/its/this language... become the topic of the previous user turns; he/she/him/his/her
    the newest person either side named ("Guido van Rossum" from the assistant's reply), "there" the
    newest place; ellipsis ("What about Java?") reuses the previous question with the new topic;
    "Tell me more" gains "about <topic>". A question that already stands alone is returned unchanged
    (apart from expanded contractions when rewritten).
    """
    previous = user_turns(history, question)
    if not previous or not _needs_context(question):
        return question
    named = entities(history)
    person = next((n for n, kind in named if kind == "person"), "")
    place = next((n for n, kind in named if kind == "place"), "")
    # Resolve earlier turns first, so a chain of follow-ups keeps the original topic.
    resolved_prev: list[str] = []
    for turn in previous:
        resolved_prev.append(resolve_followup(turn, resolved_prev) if resolved_prev else turn)
    topic, source = "", ""
    for turn in reversed(resolved_prev):
        topic = topic_of(turn)
        if topic:
            source = turn
            break
    if not topic:
        topic = next((n for n, kind in named if kind == "thing"), "")
    if not topic and not person and not place:
        return question
    topic = topic or person or place
    punct = "?" if question.strip().endswith("?") or not question.strip() else question.strip()[-1]
    m = _ELLIPSIS_RE.match(question)
    if m:
        new = (m.group(1) or m.group(2) or "").strip()
        base = _clean(source)
        first = new.split()[0].lower() if new else ""
        if first in ("for", "in", "with", "on", "at", "during", "without"):
            return f"{base} {new}?"
        if topic.lower() in base.lower():
            return _capitalise(re.sub(re.escape(topic), new, base, count=1, flags=re.I)) + "?"
        return f"{base} ({new})?"
    clean = _clean(question)
    toks = set(words(clean))
    if toks and toks <= _MORE_WORDS and not _PRONOUN_RE.search(clean):
        return f"{_capitalise(clean)} about {topic}{punct if punct in '?.!' else '.'}"
    if person and person.lower() == topic.lower():
        person = ""
    out = _substitute(clean, topic, person, place)
    return _capitalise(out) + (punct if punct in "?.!" else "")


# -- expansion -------------------------------------------------------------------------------------------
def _keywords(text: str) -> list[str]:
    """Content words in order, original case, each once."""
    seen: dict[str, str] = {}
    for w in re.findall(r"[A-Za-z0-9][\w+#'-]*", expand_contractions(text)):
        low = w.lower()
        if low not in STOPWORDS and low not in _QWORDS:
            seen.setdefault(low, w)
    return list(seen.values())


def _replace_word(text: str, word: str, replacement: str) -> str:
    def repl(m: re.Match[str]) -> str:
        return _capitalise(replacement) if m.start() == 0 else replacement

    return re.sub(rf"\b{re.escape(word)}\b", repl, text, count=1, flags=re.I)


def expand_query(query: str, num_queries: int = 3) -> list[str]:
    """``num_queries`` distinct queries: the original first, then deterministic reformulations.

    Reformulations, interleaved so the first few differ in kind: thesaurus synonyms, acronym
    expansion (and contraction), keyword-only, a question/imperative form, then topic templates
    ("<topic> overview", "how <topic> works"...) until there are enough.
    """
    n = max(1, int(num_queries))
    original = " ".join(query.split())
    if not original:
        return []
    kws = _keywords(original)
    topic = topic_of(original) or " ".join(kws) or original
    is_question = original.rstrip().endswith("?") or (original.split()[0].lower() in _QWORDS + _AUX)

    synonyms: list[str] = []
    for rank in range(2):
        for w in kws:
            alts = THESAURUS.get(w.lower())
            if alts and rank < len(alts):
                synonyms.append(_replace_word(original, w, alts[rank]))
    acronyms: list[str] = []
    for w in kws:
        if w.lower() in ACRONYMS:
            acronyms.append(_replace_word(original, w, ACRONYMS[w.lower()]))
    low = original.lower()
    for short, long in ACRONYMS.items():
        if long in low:
            acronyms.append(re.sub(re.escape(long), short.upper(), original, count=1, flags=re.I))
    keyword_form = [" ".join(kws)] if kws else []
    form = (
        [f"Explain {topic}", f"{topic} explained"]
        if is_question
        else [f"What is {topic}?", f"How does {topic} work?"]
    )
    templates = [
        f"{topic} overview",
        f"how {topic} works",
        f"{topic} examples",
        f"{topic} definition",
        f"{topic} use cases",
        f"{topic} history",
        f"{topic} advantages and disadvantages",
        f"{topic} best practices",
        f"{topic} tutorial",
        f"{topic} compared with alternatives",
        f"common questions about {topic}",
        f"{topic} key facts",
    ]

    ordered: list[str] = [original]
    streams = [synonyms, keyword_form, form, acronyms]
    while any(streams):
        for s in streams:
            if s:
                ordered.append(s.pop(0))
    ordered.extend(templates)
    out: list[str] = []
    seen: set[str] = set()
    for q in ordered:
        key = normalise(q)
        if key and key not in seen:
            seen.add(key)
            out.append(q)
        if len(out) == n:
            return out
    i = 2
    while len(out) < n:  # more variants than we have ideas for: still distinct, still deterministic
        out.append(f"{topic} (aspect {i})")
        i += 1
    return out


# -- decomposition -------------------------------------------------------------------------------------
_SPLIT_RE = re.compile(
    r"\s*(?:,\s*)?\b(?:and\s+also|and\s+then|as\s+well\s+as|and|also|plus|then)\s+(?=(?:"
    + "|".join(_QWORDS + _AUX + ("list", "explain", "describe", "compare", "give", "tell"))
    + r")\b)",
    re.I,
)
_COMPARE_RE = re.compile(
    r"^(?:compare|contrast)\s+(.+?)\s+(?:and|with|to|vs\.?|versus)\s+(.+)$|"
    r"^(?:what\s+is|what\s+are)?\s*(?:the\s+)?differences?\s+between\s+(.+?)\s+and\s+(.+)$|"
    r"^(.+?)\s+(?:vs\.?|versus)\s+(.+)$",
    re.I,
)
_LIST_RE = re.compile(
    r"^(.*\b(?:of|for|about|in|on|with)\s+)([\w .+#-]{1,40}?)\s+and\s+([\w .+#-]{1,40})$", re.I
)


_PARTS_RE = re.compile(r"(?<=\?)\s+|;\s*")


def decompose_query(query: str) -> list[str]:
    """Split a compound question into standalone sub-questions (pronouns resolved); else ``[query]``."""
    return list(_decompose(query))


@lru_cache(maxsize=4096)
def _decompose(query: str) -> tuple[str, ...]:
    """Cached by text (a pure function of it): the same question is decomposed once."""
    text = " ".join(query.split())
    if not text:
        return ()
    parts = [p.strip() for p in _PARTS_RE.split(text) if p.strip()]
    pieces: list[str] = []
    for part in parts:
        pieces.extend(s.strip(" ,") for s in _SPLIT_RE.split(part) if s.strip(" ,"))
    out: list[str] = []
    for piece in pieces:
        clean = _clean(piece)
        m = _COMPARE_RE.match(clean)
        if m:
            a, b = [g for g in m.groups() if g][:2]
            a, b = _noun_phrase(a) or a, _noun_phrase(b) or b
            out.extend([f"What is {a}?", f"What is {b}?", f"How do {a} and {b} differ?"])
            continue
        m = _LIST_RE.match(clean)
        if m and not any(w in _QWORDS + _AUX for w in words(m.group(3))):
            out.extend([f"{_capitalise(m.group(1))}{m.group(2)}?", f"{_capitalise(m.group(1))}{m.group(3)}?"])
            continue
        first = clean.split()[0].lower() if clean.split() else ""
        out.append(_capitalise(clean) + ("?" if first in _QWORDS + _AUX else "."))
    resolved: list[str] = []
    for sub in out:
        resolved.append(resolve_followup(sub, resolved) if resolved else sub)
    unique: list[str] = []
    for q in resolved:
        if normalise(q) not in {normalise(u) for u in unique}:
            unique.append(q)
    return tuple(unique) if len(unique) > 1 else (text,)
