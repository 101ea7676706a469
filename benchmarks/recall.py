"""Fact recall of each context strategy on a fact-bearing conversation, against LangChain's
``trim_messages`` and LlamaIndex's ``ChatMemoryBuffer`` (both keep the newest messages that fit).

The conversation (``sibyl_nb.context.samples``) is 20 user turns, each stating one fact (a name, a
time, a price, an allergy, a decision...), each answered by a reply of filler. Every strategy gets
the same budget; recall is the share of the 20 facts whose evidence appears in what is sent, at
the end and at every turn of a replay (the worst turn shows what a live session would lose).

    python benchmarks/recall.py

``run(quick=False) -> list[dict]`` is the entry point for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.memory_peers import llamaindex_buffer  # noqa: E402
from sibyl_nb.context.compare import compare_context_strategies, fact_recall  # noqa: E402
from sibyl_nb.context.samples import FACTS, conversation  # noqa: E402
from sibyl_nb.context.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, get_counter  # noqa: E402

__all__ = ["run", "main", "BUDGETS", "STRATEGIES"]

BUDGETS = (1_000, 1_500)
RESERVE = 200
STRATEGIES: tuple[Any, ...] = (
    "window",
    {"subtechnique": "compression", "compression_ratio": 0.3, "label": "compression 30%"},
    {"subtechnique": "summary", "summary_frequency": 10, "summary_length": 120, "label": "summary"},
    "hierarchical",
)


def _trim_messages_recall(history: list[dict[str, Any]], budget: int) -> float | None:
    try:
        from langchain_core.messages import AIMessage, HumanMessage, trim_messages
    except ImportError:
        return None
    counter = get_counter()

    def count(msgs: list[Any]) -> int:
        return sum(TOKENS_PER_MESSAGE + 1 + counter.count(m.content) for m in msgs) + REPLY_PRIMING

    lc = [HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"]) for m in history]
    kept = trim_messages(lc, max_tokens=budget - RESERVE, token_counter=count, strategy="last")
    got, total = fact_recall([{"content": m.content} for m in kept], FACTS)
    return got / total


def _llamaindex_recall(history: list[dict[str, Any]], budget: int) -> float | None:
    made = llamaindex_buffer(history, budget - RESERVE)
    if made is None:
        return None
    buf, _ = made
    got, total = fact_recall([{"content": m.content} for m in buf.get()], FACTS)
    return got / total


def run(quick: bool = False) -> list[dict[str, Any]]:
    history = conversation()
    rows: list[dict[str, Any]] = []
    for budget in BUDGETS[:1] if quick else BUDGETS:
        df = compare_context_strategies(
            history, STRATEGIES, max_tokens=budget, reserve_tokens=RESERVE, facts=FACTS, replay=True
        )
        lc = _trim_messages_recall(history, budget)
        li = _llamaindex_recall(history, budget)
        for label, r in df.iterrows():
            rows.append(
                {
                    "benchmark": f"recall {label} @{budget} tokens",
                    "unit": "share of 20 facts",
                    "sibyl_nb": r["recall"],
                    "peer": "LangChain trim_messages",
                    "peer_value": lc,
                    "ratio": (r["recall"] / lc) if lc else None,
                    "worst_turn": r["replay_recall_min"],
                    "mean_over_turns": r["replay_recall_mean"],
                    "tokens_used": int(r["tokens_used"]),
                    "stability": r["stability"],
                    "llamaindex": li,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rows = run(args.quick)
    cols = [
        "benchmark",
        "sibyl_nb",
        "worst_turn",
        "mean_over_turns",
        "tokens_used",
        "stability",
        "peer_value",
        "llamaindex",
    ]
    head = [
        "benchmark",
        "recall",
        "worst turn",
        "mean",
        "tokens",
        "stability",
        "trim_messages",
        "ChatMemoryBuffer",
    ]
    table = [head] + [
        [
            r[c]
            if isinstance(r[c], str)
            else ("-" if r[c] is None else f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]))
            for c in cols
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for j, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
