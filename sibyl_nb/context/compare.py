"""``compare_context_strategies``: run several strategies on one history, one DataFrame row each.

pandas is imported inside the function: the engine never pays for it at import time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .strategies import ALLOCATION_KEYS, STRATEGIES, build_context
from .tokens import get_counter

__all__ = ["compare_context_strategies"]

_NAME_KEYS = ("subtechnique", "strategy", "name")


def _spec(item: str | Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(label, strategy, options) from ``"window"`` or ``{"subtechnique": "window", "max_tokens": ...}``."""
    if isinstance(item, str):
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
    if label is None:
        extra = ", ".join(f"{k}={v}" for k, v in opts.items() if k not in ("max_tokens", "levels"))
        label = f"{strategy} ({extra})" if extra else strategy
    return label, strategy, opts


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
) -> Any:
    """One row per strategy: tokens used, messages kept in full / compressed / summarised, dropped,
    the allocation (``alloc_*`` columns, summing to ``max_tokens``), ``compression_ratio`` (history
    tokens sent / history tokens available) and ``time_ms`` (best of ``repeat`` runs).

    ``strategies`` are names (``"window"``) or dicts (``{"subtechnique": "compression",
    "compression_ratio": 0.3}``); a dict's own ``max_tokens`` etc. override the shared arguments.
    """
    import pandas as pd

    counter = get_counter(model)
    history = [m if isinstance(m, dict) else dict(m) for m in history]
    history_tokens = sum(counter.message_tokens(m) for m in history)  # counted once, cached in the messages
    rows = []
    for item in strategies:
        label, strategy, opts = _spec(item)
        options: dict[str, Any] = {
            "max_tokens": max_tokens,
            "system_prompt": system_prompt,
            "current": current,
            "summary": summary,
            "reserve_tokens": reserve_tokens,
            "counter": counter,
        }
        options.update(opts)
        best = float("inf")
        result = None
        for _ in range(max(1, int(repeat))):
            t0 = time.perf_counter()
            result = build_context(strategy, history, **options)
            best = min(best, time.perf_counter() - t0)
        assert result is not None
        a = result.allocation
        sent = a["summary"] + a["compressed"] + a["recent"]
        row = {
            "strategy": label,
            "tokens_used": result.tokens_used,
            "max_tokens": result.max_tokens,
            "kept_full": result.kept["full"],
            "kept_compressed": result.kept["compressed"],
            "kept_summarized": result.kept["summarized"],
            "dropped": result.dropped,
        }
        row.update({f"alloc_{k}": a[k] for k in ALLOCATION_KEYS})
        row["compression_ratio"] = sent / history_tokens if history_tokens else 1.0
        row["time_ms"] = best * 1000.0
        rows.append(row)
    return pd.DataFrame(rows).set_index("strategy")
