"""``ai_generation.*``: generation through a provider, validation, and self-consistency consensus.

Generation parses structured fields out of the reply *here*, not in the provider, so conditions such
as ``${classify.type} == "factual"`` or ``${critique.score} < 8`` work with any model: a prompt
"Classify X: a, b, or c" yields a field named after X, "Rate ... 0-10" yields ``score``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ...document.schema import ConfigSchema, Field
from ...errors import TechniqueError
from ...providers.base import Completion
from ...providers.streaming import complete_with_tokens
from ...text.critique import is_refusal, rate_answer
from ...text.gather import upstream_answer, upstream_documents
from ...text.prompts import match_choice, parse_classify_prompt, parse_rating_prompt, parse_score
from ...text.query import messages_of
from ...text.support import SUPPORT_THRESHOLD, check_answer
from ...text.tokenize import jaccard, normalise, sentences, term_set, words
from ..context import query_of
from ..registry import technique

__all__ = [
    "generation",
    "validation",
    "consensus",
    "build_messages",
    "parse_fields",
    "output_fields",
    "DEFAULT_SYSTEM_PROMPT",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question using the context documents when "
    "they are relevant, and say so when they do not contain the answer."
)
_NUMBER = (int, float)
MAX_CANDIDATES = 64  # each candidate is one provider call: a sane ceiling, not a memory bomb
_PROVIDER = Field(str, "provider name (default: primary)")
_SYSTEM = Field((str, type(None)), "system prompt")
_SAMPLING = {
    "temperature": Field(_NUMBER, "sampling temperature", minimum=0, maximum=2),
    "max_tokens": Field(int, "longest answer, in tokens", minimum=1, maximum=10_000_000),
    "model": Field(str, "model name sent to the provider"),
    "top_p": Field(_NUMBER, "nucleus sampling", exclusive_minimum=0, maximum=1),
    "stop": Field((str, list), "stop sequence(s)", max_items=16),
}
_MAX_DOCS = Field(int, "retrieved documents put in the prompt", minimum=1, maximum=1000)
_MAX_CONTEXT_DOCS = 8


# -- messages ------------------------------------------------------------------------------------------
def _context_block(docs: Sequence[Mapping[str, Any]], limit: int) -> str:
    lines = []
    for i, d in enumerate(docs[:limit], start=1):
        title = " ".join(str(d.get("title") or d.get("id") or f"Document {i}").split()).replace(": ", " - ")
        text = " ".join(str(d.get("text", "")).split())
        lines.append(f"[{i}] {title}: {text}")
    return "Context:\n" + "\n".join(lines)


def _conversation(ctx: Any) -> list[dict[str, str]]:
    raw = ctx.session.get("context_messages")
    if not isinstance(raw, list):
        raw = ctx.session.get("conversation_history")
    history = messages_of(raw)
    current = {normalise(query_of(ctx.input)), normalise(ctx.query)} - {""}
    if history and history[-1]["role"] == "user" and normalise(history[-1]["content"]) in current:
        history = history[:-1]  # the current message is sent last, once
    return history


def build_messages(
    ctx: Any, prompt: Any = None, system_prompt: Any = None, docs: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, str]]:
    """OpenAI-style messages: system (+ a ``Context:`` block of documents), the conversation so far,
    then the user message: ``prompt`` (+ ``Question: <query>`` unless it already holds it) or the query."""
    docs = upstream_documents(ctx) if docs is None else list(docs)
    system = str(system_prompt).strip() if system_prompt not in (None, "") else DEFAULT_SYSTEM_PROMPT
    limit = int(ctx.config.get("max_context_docs", _MAX_CONTEXT_DOCS) or _MAX_CONTEXT_DOCS)
    if docs:
        system = f"{system}\n\n{_context_block(docs, limit)}"
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    messages.extend(_conversation(ctx))
    query = ctx.query
    if prompt not in (None, ""):
        user = str(prompt).strip()
        if query and query.strip().lower() not in user.lower():
            user = f"{user}\n\nQuestion: {query}"
    else:
        user = query
    messages.append({"role": "user", "content": user})
    return messages


def _params(ctx: Any, **overrides: Any) -> dict[str, Any]:
    params = {
        k: ctx.config[k]
        for k in ("temperature", "max_tokens", "model", "top_p", "stop")
        if ctx.config.get(k) is not None
    }
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


# -- structured fields ----------------------------------------------------------------------------------
def parse_fields(prompt: str, text: str, provider_fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``kind`` plus the fields a prompt asks for, read from the reply ``text``.

    "Classify X: a, b, or c" -> ``kind="classification"``, the chosen label under X's snake_case
    name, X's last word and ``label`` (``None`` if the reply names no listed label); "Rate ... 0-10"
    -> ``kind="rating"``, ``score`` and ``critique``; anything else -> ``kind="answer"``, ``answer``.
    """
    provider_fields = dict(provider_fields or {})
    spec = parse_classify_prompt(prompt) if prompt else None
    if spec is not None:
        value = match_choice(text, spec.choices)
        if value is None:
            value = next(
                (
                    provider_fields[f]
                    for f in (*spec.fields, "label")
                    if provider_fields.get(f) in spec.choices
                ),
                None,
            )
        out: dict[str, Any] = {"kind": "classification", "choices": list(spec.choices), "label": value}
        out.update({f: value for f in spec.fields})
        return out
    rating = parse_rating_prompt(prompt) if prompt else None
    if rating is not None:
        score = parse_score(text, rating.low, rating.high)
        if score is None and isinstance(provider_fields.get("score"), _NUMBER):
            score = provider_fields["score"]
        return {"kind": "rating", "score": score, "scale": [rating.low, rating.high], "critique": text}
    return {"kind": "answer", "answer": text}


def output_fields(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields ``ai_generation.generation`` returns for this config (for static ``${}`` checks)."""
    base = ("text", "kind", "usage", "provider", "model", "finish_reason", "context_count")
    prompt = str(config.get("prompt") or "")
    spec = parse_classify_prompt(prompt)
    if spec is not None:
        return base + ("choices", "label") + spec.fields
    if parse_rating_prompt(prompt) is not None:
        return base + ("score", "scale", "critique")
    return base + ("answer",)


# -- ai_generation.generation -----------------------------------------------------------------------------
@technique(
    "ai_generation.generation",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "provider": _PROVIDER,
            "prompt": Field((str, int, float, list, dict), "the prompt (templates allowed)"),
            "system_prompt": _SYSTEM,
            **_SAMPLING,
            "max_context_docs": _MAX_DOCS,
        },
        description="ask a provider; returns text plus fields parsed from it",
    ),
    # Every field any prompt kind can produce; the label field named after "Classify X" (``type``,
    # ``complexity``...) varies per config: ``generation.output_fields(config)`` lists it.
    outputs=(
        "text",
        "answer",
        "kind",
        "usage",
        "provider",
        "model",
        "finish_reason",
        "context_count",
        "choices",
        "label",
        "score",
        "scale",
        "critique",
    ),
    # a templated prompt is only known at run time: its fields are too
    outputs_for=lambda config: None if "${" in str(config.get("prompt") or "") else output_fields(config),
)
async def generation(ctx: Any) -> dict[str, Any]:
    """Ask a provider; returns ``text`` plus fields parsed from it (see :func:`parse_fields`)."""
    prompt = ctx.config.get("prompt")
    docs = upstream_documents(ctx)
    messages = build_messages(ctx, prompt, ctx.config.get("system_prompt"), docs)
    provider = ctx.provider(ctx.config.get("provider"))
    completion: Completion = await complete_with_tokens(provider, messages, ctx.token_sink(), _params(ctx))
    text = completion.text if isinstance(completion.text, str) else str(completion.text)
    out: dict[str, Any] = {"text": text}
    out.update(parse_fields(str(prompt or ""), text, getattr(completion, "fields", None)))
    out.update(
        {
            "usage": dict(completion.usage or {}),
            "provider": completion.provider or getattr(provider, "name", ""),
            "model": completion.model,
            "finish_reason": completion.finish_reason,
            "context_count": min(len(docs), int(ctx.config.get("max_context_docs") or _MAX_CONTEXT_DOCS)),
        }
    )
    return out


generation.output_fields = output_fields  # type: ignore[attr-defined]  # the loader may ask per config


# -- ai_generation.validation --------------------------------------------------------------------------------
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|can't|isn't|aren't|wasn't|doesn't|don't|didn't|without)\b", re.I
)


def _fact_check(
    answer: str, docs: list[dict[str, Any]], threshold: float
) -> tuple[float, list[str], list[dict[str, Any]]]:
    checks = check_answer(answer, docs or None, threshold)
    if not checks:
        return 0.0, ["the answer has no checkable sentences"], []
    supported = sum(1 for c in checks if c.supported)
    issues = [f"unsupported by the sources: {c.sentence}" for c in checks if not c.supported]
    return supported / len(checks), issues, [c.as_dict() for c in checks]


def _context_score(checks: list[dict[str, Any]]) -> float:
    """Share of sentences supported by the documents this run retrieved (not just the corpus)."""
    if not checks:
        return 0.0
    return round(sum(1 for c in checks if c.get("supported") and c.get("in_sources", True)) / len(checks), 3)


def _quality(
    question: str, answer: str, docs: list[dict[str, Any]]
) -> tuple[float, list[str], list[dict[str, Any]]]:
    r = rate_answer(question, answer, docs or None)
    n_words = len(words(answer))
    length_ok = 1.0 if 8 <= n_words <= 300 else (n_words / 8 if n_words < 8 else 300 / n_words)
    checks = [
        {"check": "rubric", "score": r.score, "max": 10},
        {"check": "coverage", "score": r.coverage},
        {"check": "grounding", "score": r.grounding},
        {"check": "completeness", "score": r.completeness, "max": 3},
        {"check": "length", "score": round(length_ok, 3), "words": n_words},
        {"check": "not_refusal", "score": 0.0 if is_refusal(answer) else 1.0},
    ]
    issues = []
    if r.missing:
        issues.append("does not address: " + ", ".join(r.missing))
    issues.extend(f"unsupported by the sources: {s}" for s in r.unsupported)
    if r.completeness < 1:
        issues.append("add more supporting detail")
    if length_ok < 1:
        issues.append(f"length ({n_words} words) is outside 8-300 words")
    if is_refusal(answer):
        issues.append("the answer declines to answer")
    score = (r.score / 10) * min(1.0, length_ok)
    return score, issues, checks


def _consistency(
    answer: str, docs: list[dict[str, Any]], candidates: list[str]
) -> tuple[float, list[str], list[dict[str, Any]]]:
    sents = sentences(answer)
    issues: list[str] = []
    checks: list[dict[str, Any]] = []
    contradictions = 0
    for i, a in enumerate(sents):  # pairs that say nearly the same thing, one of them negated
        for b in sents[i + 1 :]:
            if jaccard(term_set(a), term_set(b)) >= 0.5 and bool(_NEGATION.search(a)) != bool(
                _NEGATION.search(b)
            ):
                contradictions += 1
                issues.append(f"contradiction: '{a}' vs '{b}'")
    doc_sents = [s for d in docs for s in sentences(str(d.get("text", "")))]
    for a in sents:
        at = term_set(a)
        best = max(doc_sents, key=lambda s: jaccard(at, term_set(s)), default="")
        if (
            best
            and jaccard(at, term_set(best)) >= 0.5
            and bool(_NEGATION.search(a)) != bool(_NEGATION.search(best))
        ):
            contradictions += 1
            issues.append(f"contradicts the sources: '{a}' vs '{best}'")
    internal = 1.0 - min(1.0, contradictions / max(1, len(sents)))
    checks.append({"check": "contradictions", "count": contradictions, "score": round(internal, 3)})
    score = internal
    if len(candidates) > 1:
        sets = [term_set(c) for c in candidates]
        pairs = [jaccard(sets[i], sets[j]) for i in range(len(sets)) for j in range(i + 1, len(sets))]
        agreement = sum(pairs) / len(pairs)
        checks.append(
            {"check": "candidate_agreement", "score": round(agreement, 3), "candidates": len(candidates)}
        )
        if agreement < 0.5:
            issues.append(f"candidates disagree (agreement {agreement:.2f})")
        score = (internal + agreement) / 2
    return score, issues, checks


@technique(
    "ai_generation.validation",
    blocking=False,
    subtechniques=("fact_check", "quality", "consistency"),
    config_schema=ConfigSchema(
        {
            "threshold": Field(
                _NUMBER, "score at or above which the answer is valid", default=0.7, minimum=0, maximum=1
            ),
            "answer": Field(str, "the answer to validate (default: the upstream answer)"),
        },
        subtechniques={mode: ("threshold", "answer") for mode in ("fact_check", "quality", "consistency")},
        default_subtechnique="fact_check",
        description="score the upstream answer in [0, 1]",
    ),
    outputs=(
        "score",
        "valid",
        "issues",
        "answer",
        "checks",
        "subtechnique",
        "source",
        "threshold",
        "context_score",
    ),
)
def validation(ctx: Any) -> dict[str, Any]:
    """Score the upstream answer in [0, 1]: ``fact_check`` (share of sentences supported by the
    retrieved documents or, failing those, the corpus; ``context_score`` counts retrieved documents
    only), ``quality`` (the 0-10 rubric / 10) or ``consistency`` (no self-contradiction or
    contradiction of the sources; agreement of consensus candidates)."""
    sub = str(ctx.config.get("subtechnique") or "fact_check")
    threshold = float(ctx.config.get("threshold", 0.7))
    if ctx.config.get("answer"):
        answer, source = str(ctx.config["answer"]), None
    else:
        answer, source = upstream_answer(ctx)
    base = {"answer": answer, "subtechnique": sub, "source": source, "threshold": threshold}
    if not answer.strip():
        return {
            **base,
            "score": 0.0,
            "valid": False,
            "issues": ["no answer found upstream to validate"],
            "checks": [],
        }
    docs = upstream_documents(ctx)
    extra: dict[str, Any] = {}
    if sub == "fact_check":
        score, issues, checks = _fact_check(answer, docs, SUPPORT_THRESHOLD)
        extra["context_score"] = _context_score(checks) if docs else None
    elif sub == "quality":
        score, issues, checks = _quality(ctx.query, answer, docs)
    elif sub == "consistency":
        candidates = []
        for output in ctx.upstream.values():
            if isinstance(output, Mapping) and isinstance(output.get("candidates"), list):
                candidates = [
                    c.get("text", "") if isinstance(c, Mapping) else str(c) for c in output["candidates"]
                ]
        score, issues, checks = _consistency(answer, docs, candidates)
    else:
        raise TechniqueError(
            f"unknown subtechnique '{sub}' (known: fact_check, quality, consistency)",
            node_id=ctx.node_id,
            technique="ai_generation.validation",
        )
    score = round(max(0.0, min(1.0, score)), 3)
    return {**base, "score": score, "valid": score >= threshold, "issues": issues, "checks": checks, **extra}


# -- ai_generation.consensus ----------------------------------------------------------------------------------
def _default_temperatures(n: int) -> list[float]:
    if n == 1:
        return [0.2]
    return [round(0.2 + i * 1.0 / (n - 1), 2) for i in range(n)]


@technique(
    "ai_generation.consensus",
    blocking=False,
    config_schema=ConfigSchema(
        {
            "num_candidates": Field(int, "answers sampled", default=3, minimum=1, maximum=MAX_CANDIDATES),
            "provider": _PROVIDER,
            "temperatures": Field(
                list,
                "one temperature per candidate",
                items=_SAMPLING["temperature"],
                max_items=MAX_CANDIDATES,
            ),
            "prompt": Field((str, int, float), "the prompt (templates allowed)"),
            "system_prompt": _SYSTEM,
            **{k: v for k, v in _SAMPLING.items() if k != "temperature"},
            "max_context_docs": _MAX_DOCS,
        },
        description="sample several answers and keep the one the others agree with most",
    ),
    outputs=("answer", "text", "candidates", "agreement", "kind", "usage", "provider", "model", "chosen"),
)
async def consensus(ctx: Any) -> dict[str, Any]:
    """Sample ``num_candidates`` answers at spread temperatures (default 0.2 to 1.2) and keep the one
    most similar, on average, to the others (self-consistency: the majority view wins)."""
    n = int(ctx.config.get("num_candidates") or 3)
    if n < 1:
        raise TechniqueError(
            f"num_candidates must be >= 1, got {n}", node_id=ctx.node_id, technique="ai_generation.consensus"
        )
    temps = ctx.config.get("temperatures")
    temperatures = (
        [float(t) for t in temps][:n] if isinstance(temps, list) and temps else _default_temperatures(n)
    )
    while len(temperatures) < n:
        temperatures.append(temperatures[-1])
    messages = build_messages(ctx, ctx.config.get("prompt"), ctx.config.get("system_prompt"))
    provider = ctx.provider(ctx.config.get("provider"))
    params = _params(ctx)
    params.pop("temperature", None)
    completions = await asyncio.gather(
        *(provider.complete(messages, **params, temperature=t) for t in temperatures)
    )
    texts = [c.text if isinstance(c.text, str) else str(c.text) for c in completions]
    sets = [term_set(t) or frozenset(normalise(t).split()) for t in texts]
    agreements = []
    for i in range(len(texts)):
        others = [jaccard(sets[i], sets[j]) for j in range(len(texts)) if j != i]
        agreements.append(sum(others) / len(others) if others else 1.0)
    chosen = max(range(len(texts)), key=lambda i: (agreements[i], -i))
    usage: dict[str, int] = {}
    for c in completions:
        for k, v in (c.usage or {}).items():
            if isinstance(v, int):
                usage[k] = usage.get(k, 0) + v
    return {
        "answer": texts[chosen],
        "text": texts[chosen],
        "kind": "answer",
        "chosen": chosen,
        "agreement": round(agreements[chosen], 3),
        "candidates": [
            {"text": t, "temperature": temperatures[i], "agreement": round(agreements[i], 3)}
            for i, t in enumerate(texts)
        ],
        "usage": usage,
        "provider": completions[0].provider if completions else "",
        "model": completions[0].model if completions else "",
    }
