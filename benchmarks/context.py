"""Per-turn cost of context selection on long histories: sibyl_nb's window and hierarchical
strategies against LangChain's ``trim_messages`` with a tiktoken counter, in the same run.

A turn = one new message arrives (counted once), is appended, and the context for the next call
is selected under an 8,000-token budget (2,000 reserved for the reply). Histories hold 100 / 1,000
/ 10,000 messages of about 250 tokens. ``trim_messages`` gets the same per-message arithmetic
(3 + role + content tokens, + 3 priming), so both keep the same messages; it re-tokenises the
history on every call, which is the difference being measured.

    python benchmarks/context.py            # full run
    python benchmarks/context.py --quick    # fewer turns (CI)

``run(quick=False) -> list[dict]`` is the entry point for a benchmark runner.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sibyl_nb.context.strategies import hierarchical_context, window_context  # noqa: E402
from sibyl_nb.context.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, get_counter  # noqa: E402

__all__ = ["run", "main", "SIZES"]

SIZES = (100, 1_000, 10_000)
MAX_TOKENS = 8_000
RESERVE = 2_000
TARGET_TOKENS = 250
GOAL_MS = 1.0

_VOCAB = (
    "python data model context token window summary language program compute memory network graph "
    "node edge scheduler pipeline session cache store budget answer question retrieval document "
    "vector index query latency throughput notebook widget kernel provider prompt reply"
)
_WORDS = _VOCAB.split()


def _message(i: int, rng: random.Random, counter: Any) -> dict[str, Any]:
    """A chat message of about ``TARGET_TOKENS`` tokens (several sentences, so compression has work)."""
    sentences: list[str] = []
    while True:
        s = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
        sentences.append(s)
        text = f"Message {i}. " + " ".join(sentences)
        if counter.count(text) >= TARGET_TOKENS - 10:
            return {"role": "user" if i % 2 == 0 else "assistant", "content": text}


def _history(n: int, counter: Any, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    history = [_message(i, rng, counter) for i in range(n)]
    for m in history:
        counter.message_tokens(m)  # counted once, when each message arrived
    return history


def _turns(history: list[dict[str, Any]], turns: int, select: Any, counter: Any) -> tuple[list[float], Any]:
    rng = random.Random(len(history))
    new = [_message(len(history) + t, rng, counter) for t in range(turns)]
    times = []
    result = None
    for msg in new:
        t0 = time.perf_counter()
        counter.message_tokens(msg)  # the new message, counted once
        history.append(msg)
        result = select(history)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times, result


def _langchain(
    history: list[dict[str, Any]], turns: int, counter: Any
) -> tuple[list[float], int, int] | None:
    """(ms per turn, messages trim_messages kept, messages our window keeps on the same history)."""
    try:
        from langchain_core.messages import AIMessage, HumanMessage, trim_messages
    except ImportError:
        return None
    enc = counter._enc
    role_tokens = {"human": counter.count("user"), "ai": counter.count("assistant")}

    def count(msgs: list[Any]) -> int:  # the usual tiktoken counter: every message, every call
        return (
            sum(
                TOKENS_PER_MESSAGE + role_tokens.get(m.type, 1) + len(enc.encode_ordinary(m.content))
                for m in msgs
            )
            + REPLY_PRIMING
        )

    def to_lc(m: dict[str, Any]) -> Any:
        return HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"])

    lc = [to_lc(m) for m in history]
    rng = random.Random(len(history))
    times = []
    kept = ours = 0
    for t in range(turns):
        msg = _message(len(history) + t, rng, counter)
        t0 = time.perf_counter()
        lc.append(to_lc(msg))
        out = trim_messages(lc, max_tokens=MAX_TOKENS - RESERVE, token_counter=count, strategy="last")
        times.append((time.perf_counter() - t0) * 1000.0)
        kept = len(out)
        history.append(msg)  # the same turn through our window, untimed, to check both keep the same
        ours = window_context(history, max_tokens=MAX_TOKENS, reserve_tokens=RESERVE, counter=counter).kept[
            "full"
        ]
    return times, kept, ours


def run(quick: bool = False) -> list[dict[str, Any]]:
    """One row per history size: median ms per turn for each contender, and the ratios."""
    counter = get_counter()
    rows = []
    for n in SIZES:
        turns = 20 if quick else 200
        lc_turns = (5 if n <= 1_000 else 2) if quick else (20 if n <= 1_000 else 5)
        base = _history(n, counter)

        def window(h: list[dict[str, Any]]) -> Any:
            return window_context(h, max_tokens=MAX_TOKENS, reserve_tokens=RESERVE, counter=counter)

        def hier(h: list[dict[str, Any]]) -> Any:
            return hierarchical_context(h, max_tokens=MAX_TOKENS, reserve_tokens=RESERVE, counter=counter)

        w_times, w_res = _turns(list(base), turns, window, counter)
        h_hist = list(base)
        t0 = time.perf_counter()
        hier(h_hist)  # first call: compresses 10 and summarises 100 messages once
        h_first = (time.perf_counter() - t0) * 1000.0
        h_times, h_res = _turns(h_hist, turns, hier, counter)
        lc = _langchain(list(base), lc_turns, counter)
        row = {
            "messages": n,
            "history_tokens": sum(m["tokens"] for m in base),
            "window_ms": statistics.median(w_times),
            "window_p95_ms": sorted(w_times)[int(0.95 * (len(w_times) - 1))],
            "window_kept": w_res.kept["full"],
            "hierarchical_ms": statistics.median(h_times),
            "hierarchical_p95_ms": sorted(h_times)[int(0.95 * (len(h_times) - 1))],
            "hierarchical_first_ms": h_first,
            "hierarchical_kept": dict(h_res.kept),
            "trim_messages_ms": statistics.median(lc[0]) if lc else None,
            "trim_messages_kept": lc[1] if lc else None,
            "window_kept_same_history": lc[2] if lc else None,
            "turns": turns,
            "trim_turns": lc_turns if lc else 0,
        }
        if lc:
            row["trim_vs_window"] = row["trim_messages_ms"] / row["window_ms"]
            row["trim_vs_hierarchical"] = row["trim_messages_ms"] / row["hierarchical_ms"]
        rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer turns")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick)
    cols = [
        ("messages", "messages"),
        ("history_tokens", "tokens"),
        ("window_ms", "window ms/turn"),
        ("hierarchical_ms", "hierarchical ms/turn"),
        ("hierarchical_first_ms", "hier. 1st call ms"),
        ("trim_messages_ms", "trim_messages ms/turn"),
        ("trim_vs_window", "trim/window"),
        ("trim_vs_hierarchical", "trim/hier."),
        ("window_kept_same_history", "window kept"),
        ("trim_messages_kept", "trim kept"),
    ]
    table = [[h for _, h in cols]] + [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for j, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    last = rows[-1]
    ok = last["window_ms"] <= GOAL_MS and last["hierarchical_ms"] <= GOAL_MS
    print(
        f"\nmedian per turn at {last['messages']:,} messages: window {last['window_ms']:.3f} ms, "
        f"hierarchical {last['hierarchical_ms']:.3f} ms (goal <= {GOAL_MS} ms: {'met' if ok else 'MISSED'})"
    )
    print(
        "window and trim_messages keep the same messages:",
        all(r["trim_messages_kept"] == r["window_kept_same_history"] for r in rows),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
