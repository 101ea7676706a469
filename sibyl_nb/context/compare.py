"""``compare_context_strategies``: what a researcher chooses a context strategy by, one row each.

For every strategy on one conversation: the tokens it sends and where they go, **fact recall** (of
facts given, or extracted from the history itself), whether the **newest turn** reaches the model
whole, the **share of the history's tokens** it sends, its time, and — for abstractive strategies,
which take a provider — the **summarising model's calls and tokens**. With ``replay=True`` every
strategy is also run at every turn of the conversation, as a live session would: recall, cost and
**stability** (how much of the previous turn's context is sent again unchanged) per turn.

pandas is imported inside the function: the engine never pays for it at import time.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..text.tokenize import sentences
from .extractive import known_names, salience
from .strategies import _OPTIONS, ALLOCATION_KEYS, STRATEGIES, build_context
from .tokens import content_text, get_counter

__all__ = ["compare_context_strategies", "extract_facts", "fact_recall"]

_NAME_KEYS = ("subtechnique", "strategy", "name")
_ABSTRACT_PROMPT = (
    "Compress the conversation below into at most about {n} tokens. Keep names, facts, "
    "decisions and open questions; write plain prose, no preamble."
)

Fact = tuple[str, ...]


# ---------------------------------------------------------------------------------------- facts
def _as_fact(item: Any) -> Fact:
    if isinstance(item, str):
        return (item,)
    if isinstance(item, Sequence) and item and all(isinstance(x, str) for x in item):
        return tuple(item)
    raise ValueError(f"a fact is a string or a list of strings that must all appear, got {item!r}")


def extract_facts(history: Sequence[Mapping[str, Any]], *, min_salience: float = 0.3) -> list[Fact]:
    """The facts the user stated, as evidence to look for: from each user sentence that carries one
    (see :func:`~sibyl_nb.context.extractive.salience`), its numbers and names, or else its two
    longest content words ("allergic", "shellfish")."""
    from ..text.tokenize import STOPWORDS

    users = " ".join(content_text(m.get("content")) for m in history if m.get("role") == "user")
    names = known_names(users)
    out: list[Fact] = []
    seen: set[Fact] = set()
    for m in history:
        if m.get("role") != "user":
            continue
        for s in sentences(content_text(m.get("content"))):
            if s.rstrip().endswith("?") or salience(s, names) < min_salience:
                continue
            numbers = re.findall(r"\d[\dA-Za-z,.:/-]*[\dA-Za-z]|\d", s)
            caps = [
                m.group(0)
                for m in re.finditer(r"\b[A-Z][a-zA-Z'’-]+", s)
                if (m.start() > 0 or m.group(0) in names) and m.group(0).lower() not in STOPWORDS
            ]
            evidence = tuple(dict.fromkeys(numbers + caps))
            if not evidence:
                words = [w for w in re.findall(r"[a-zA-Z]+", s) if w.lower() not in STOPWORDS]
                evidence = tuple(sorted(words, key=lambda w: (-len(w), w))[:2])
            if evidence and evidence not in seen:
                seen.add(evidence)
                out.append(evidence)
    return out


def _text_of(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(content_text(m.get("content")) for m in messages).lower()


def fact_recall(messages: Sequence[Mapping[str, Any]], facts: Sequence[Fact]) -> tuple[int, int]:
    """(facts whose every piece of evidence appears in ``messages``, facts) — case-insensitive."""
    text = _text_of(messages)
    return sum(all(e.lower() in text for e in f) for f in facts), len(facts)


def _first_mention(history: Sequence[Mapping[str, Any]], fact: Fact) -> int:
    """Index of the message after which all of the fact's evidence has been said."""
    seen = ""
    for i, m in enumerate(history):
        seen += "\n" + content_text(m.get("content")).lower()
        if all(e.lower() in seen for e in fact):
            return i
    return len(history)


# ---------------------------------------------------------------------------------------- specs
def _spec(item: str | Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(label, strategy, options) from ``"window"`` or ``{"subtechnique": "window", "max_tokens": ...}``;
    an unknown strategy or a misspelt option is an error (with the closest name)."""
    if isinstance(item, str):
        if item not in STRATEGIES:
            close = difflib.get_close_matches(item, list(STRATEGIES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown context strategy {item!r}{hint} (choose {', '.join(STRATEGIES)})")
        return item, item, {}
    opts = dict(item)
    label = opts.pop("label", None)
    strategy = next((v for k in _NAME_KEYS if isinstance(v := opts.get(k), str) and v in STRATEGIES), None)
    if strategy is None:
        raise ValueError(f"strategy spec {item!r} needs 'subtechnique' (one of {', '.join(STRATEGIES)})")
    for k in _NAME_KEYS:
        v = opts.pop(k, None)
        if k == "name" and v and v != strategy and label is None:
            label = str(v)
    known = set(_OPTIONS[strategy]) - {"counter", "abstract"}
    if strategy == "summary":
        known.add("summary_method")  # compression_method is already the compression strategy's own
    for key in opts:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"strategy {strategy!r} has no option {key!r}{hint} (it takes {', '.join(sorted(known))})"
            )
    if label is None:
        extra = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in ("max_tokens", "levels"))
        label = f"{strategy} ({extra})" if extra else strategy
    return label, strategy, opts


class _Model:
    """A provider as the strategies' ``abstract(messages, tokens)``, counting its calls and tokens."""

    def __init__(self, provider: Any) -> None:
        if isinstance(provider, str):
            from ..providers.registry import get_provider

            provider = get_provider(provider)
        self.provider = provider
        self.calls = 0
        self.tokens = 0
        self.cache_key = ("compare", getattr(provider, "name", type(provider).__name__), id(provider))

    def __call__(self, messages: Sequence[Mapping[str, Any]], target: int) -> str:
        transcript = "\n".join(f"{m.get('role', 'user')}: {content_text(m.get('content'))}" for m in messages)
        prompt = [
            {"role": "system", "content": _ABSTRACT_PROMPT.format(n=target)},
            {"role": "user", "content": transcript},
        ]
        out: dict[str, Any] = {}

        def run() -> None:  # its own loop: a notebook cell already runs one
            out["r"] = asyncio.run(self.provider.complete(prompt, max_tokens=target))

        t = threading.Thread(target=run)
        t.start()
        t.join()
        result = out["r"]
        self.calls += 1
        usage = getattr(result, "usage", None) or {}
        self.tokens += int(usage.get("total_tokens") or 0)
        return str(getattr(result, "text", "") or "")


def _newest_turn_complete(history: Sequence[Mapping[str, Any]], sent: Sequence[Mapping[str, Any]]) -> bool:
    """The newest user message and everything after it are sent verbatim."""
    last_user = max((i for i, m in enumerate(history) if m.get("role") == "user"), default=len(history) - 1)
    tail = [content_text(m.get("content")) for m in history[max(last_user, 0) :]]
    sent_texts = {content_text(m.get("content")) for m in sent}
    return all(t in sent_texts for t in tail)


def _stability(prev: Sequence[Mapping[str, Any]] | None, cur: Sequence[Mapping[str, Any]]) -> float | None:
    """Share of the previous turn's context sentences sent again unchanged (None at the first turn)."""
    if prev is None:
        return None
    before = {s for m in prev for s in sentences(content_text(m.get("content")))}
    if not before:
        return 1.0
    now = {s for m in cur for s in sentences(content_text(m.get("content")))}
    return len(before & now) / len(before)


# ---------------------------------------------------------------------------------------- compare
def compare_context_strategies(
    history: Sequence[Mapping[str, Any]],
    strategies: Iterable[str | Mapping[str, Any]] = tuple(STRATEGIES),
    *,
    max_tokens: int = 8000,
    system_prompt: str = "",
    current: str = "",
    summary: str = "",
    reserve_tokens: int | None = None,
    model: str | None = None,
    repeat: int = 1,
    facts: Sequence[str | Sequence[str]] | None = None,
    replay: bool = False,
    provider: Any = None,
) -> Any:
    """One row per strategy (a pandas DataFrame indexed by label). Columns:

    * ``recall`` — share of ``facts`` present in what is sent (``facts_kept`` of ``facts_total``).
      ``facts`` are strings, or lists of strings that must all appear ("Haneda", "6:40"); None
      extracts them from the user's messages (:func:`extract_facts`).
    * ``newest_turn_complete`` — the newest user message (and any reply after it) sent verbatim.
    * ``tokens_used``, ``max_tokens``, ``kept_full`` / ``kept_compressed`` / ``kept_summarized``,
      ``dropped``, ``alloc_*`` (the allocation, summing to ``max_tokens``).
    * ``history_share`` — tokens sent for the history (summary + compressed + recent) / tokens of the
      whole history (the old ``compression_ratio``: 0.2 means a fifth of the history's size is sent).
    * ``time_ms`` — best of ``repeat`` runs; ``model_calls`` / ``model_tokens`` — what the
      summarising model cost (abstractive strategies; ``provider`` is a provider or its name).
    * with ``replay=True``: ``replay_recall_mean`` / ``replay_recall_min`` (recall of the facts said so
      far, at every user turn), ``replay_tokens_mean``, ``replay_ms_mean``, ``replay_model_calls`` and
      ``stability`` (mean share of the previous turn's context sentences sent again); the per-turn
      rows are in ``df.attrs["replay"]``.

    ``strategies`` are names (``"window"``) or dicts (``{"subtechnique": "compression",
    "compression_ratio": 0.3, "label": "compress 30%"}``); a dict's own ``max_tokens`` etc. override
    the shared arguments. An unknown strategy or option is an error.
    """
    import pandas as pd

    counter = get_counter(model)
    history = [dict(m) for m in history]
    history_tokens = sum(counter.message_tokens(m) for m in history)
    fact_list = [_as_fact(f) for f in facts] if facts is not None else extract_facts(history)
    specs = [_spec(item) for item in strategies]  # every spec checked before anything runs
    rows, replay_rows = [], []
    for label, strategy, opts in specs:
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "system_prompt": system_prompt,
            "current": current,
            "summary": summary,
            "reserve_tokens": reserve_tokens,
            "counter": counter,
        }
        method = opts.pop("summary_method", None) if strategy == "summary" else opts.get("compression_method")
        options.update(opts)
        llm = None
        if method == "abstractive":
            if provider is None:
                raise ValueError(f"{label!r} is abstractive: pass provider= (a provider or its name)")
            llm = _Model(provider)
            options["abstract"] = llm

        def run(
            hist: Sequence[Mapping[str, Any]], _name: str = strategy, _options: dict[str, Any] = options
        ) -> Any:
            return build_context(_name, hist, **_options)

        best = float("inf")
        result = None
        for _ in range(max(1, int(repeat))):
            t0 = time.perf_counter()
            result = run(history)
            best = min(best, time.perf_counter() - t0)
        assert result is not None
        a = result.allocation
        kept, total = fact_recall(result.messages, fact_list)
        row: dict[str, Any] = {
            "strategy": label,
            "recall": kept / total if total else None,
            "facts_kept": kept,
            "facts_total": total,
            "newest_turn_complete": _newest_turn_complete(history, result.messages),
            "tokens_used": result.tokens_used,
            "max_tokens": result.max_tokens,
            "kept_full": result.kept["full"],
            "kept_compressed": result.kept["compressed"],
            "kept_summarized": result.kept["summarized"],
            "dropped": result.dropped,
        }
        row.update({f"alloc_{k}": a[k] for k in ALLOCATION_KEYS})
        sent = a["summary"] + a["compressed"] + a["recent"]
        row["history_share"] = sent / history_tokens if history_tokens else 1.0
        row["time_ms"] = best * 1000.0
        row["model_calls"] = llm.calls if llm else 0
        row["model_tokens"] = llm.tokens if llm else 0
        if replay:
            row.update(_replay(label, history, fact_list, run, llm, replay_rows))
        rows.append(row)
    df = pd.DataFrame(rows).set_index("strategy")
    if replay:
        df.attrs["replay"] = pd.DataFrame(replay_rows)
    df.attrs["facts"] = fact_list
    return df


def _replay(
    label: str,
    history: Sequence[Mapping[str, Any]],
    facts: Sequence[Fact],
    run: Any,
    llm: _Model | None,
    out: list[dict[str, Any]],
) -> dict[str, Any]:
    """Run the strategy after every user turn and its reply; per-turn rows go to ``out``."""
    said = [_first_mention(history, f) for f in facts]
    # the context each new user turn would get: everything before it, then the whole conversation
    ends = [i for i, m in enumerate(history) if m.get("role") == "user"][1:] + [len(history)]
    prev = None
    calls0 = llm.calls if llm else 0
    recalls, tokens, times, stab = [], [], [], []
    for turn, end in enumerate(ends, start=1):
        hist = history[:end]
        t0 = time.perf_counter()
        res = run(hist)
        ms = (time.perf_counter() - t0) * 1000.0
        known = [f for f, at in zip(facts, said, strict=True) if at < end]
        kept, total = fact_recall(res.messages, known)
        s = _stability(prev, res.messages)
        prev = res.messages
        rec = kept / total if total else None
        out.append(
            {
                "strategy": label,
                "turn": turn,
                "messages": end,
                "recall": rec,
                "facts_said": total,
                "tokens_used": res.tokens_used,
                "time_ms": ms,
                "stability": s,
            }
        )
        if rec is not None:
            recalls.append(rec)
        tokens.append(res.tokens_used)
        times.append(ms)
        if s is not None:
            stab.append(s)
    return {
        "replay_recall_mean": sum(recalls) / len(recalls) if recalls else None,
        "replay_recall_min": min(recalls) if recalls else None,
        "replay_tokens_mean": sum(tokens) / len(tokens) if tokens else 0,
        "replay_ms_mean": sum(times) / len(times) if times else 0.0,
        "replay_model_calls": (llm.calls - calls0) if llm else 0,
        "stability": sum(stab) / len(stab) if stab else None,
    }
