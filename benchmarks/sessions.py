"""Per-turn cost of a whole conversational turn on each store, as the history grows, against
LangChain's ``trim_messages`` and LlamaIndex's ``ChatMemoryBuffer`` in the same run.

A turn is what the session and context steps do for one request: load the session (the seed's
``memory`` mode with ``timeout: 3600`` and ``max_tokens: 8000``), select the context with the
``window`` strategy under an 8,000-token budget (2,000 reserved), and append the user message and
the reply. Sessions hold 1,000 / 10,000 / 100,000 messages of about 60 tokens, all three in one
store, and their turns are interleaved (one turn on each size, then the next), so the load of a
busy machine falls on every size alike. The peers get the same job on the same messages:
``trim_messages`` over the whole history with a tiktoken counter (it re-counts every message each
call), ``ChatMemoryBuffer.get()`` over a buffer holding the history.

Goals (issue 11): a whole turn <= 5 ms at 100k messages on diskcache, SQLite, PostgreSQL and Redis;
turn(100k) / turn(1k) <= 2; no append above 20 ms.

Columns: ``sibyl_nb`` the median wall time of a turn, ``cpu_ms`` this process's CPU time for it
(what a busy machine inflates least; the rest is waiting on the server, the disk or the CPU),
``read`` the most messages any timed turn loaded (an exact count: flat when it does not grow with
the history), ``kept`` the messages the window kept. The stores are opened with the session's
``timeout`` as their TTL, as the session step opens them, so every load refreshes the expiry. The
first ``WARMUP`` turns are not timed: a process's first turn of a session sizes its read (a page of
64, then one that holds the budget); every later turn reads once.

    python benchmarks/sessions.py            # full run (1k, 10k, 100k)
    python benchmarks/sessions.py --quick    # 1k and 10k, fewer turns

``run(quick=False) -> list[dict]`` is the entry point for ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.memory_peers import llamaindex_buffer  # noqa: E402
from sibyl_nb.context.strategies import window_context  # noqa: E402
from sibyl_nb.context.tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, get_counter  # noqa: E402
from sibyl_nb.sessions.manager import SessionManager  # noqa: E402
from sibyl_nb.sessions.policy import policy_from_config  # noqa: E402
from sibyl_nb.stores import open_store  # noqa: E402

__all__ = ["run", "main", "SIZES", "STORES"]

SIZES = (1_000, 10_000, 100_000)
STORES = ("memory", "diskcache", "sqlite", "postgres", "redis")
GOAL_TURN_MS = 5.0
GOAL_FLATNESS = 2.0
GOAL_APPEND_MS = 20.0
MAX_TOKENS = 8_000
TIMEOUT = 3600
WARMUP = 2  # untimed turns first: the first turn of a process sizes its read (see SessionManager)
RESERVE = 2_000
POSTGRES_URL = os.environ.get("SIBYL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SIBYL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_VOCAB = (
    "python data model context token window summary language program compute memory network graph "
    "node edge scheduler pipeline session cache store budget answer question retrieval document "
    "vector index query latency throughput notebook widget kernel provider prompt reply"
)
_WORDS = _VOCAB.split()


def _text(i: int, rng: random.Random) -> str:
    return f"Message {i}. " + " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 60))) + "."


def _messages(n: int, counter: Any, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        m = {"role": "user" if i % 2 == 0 else "assistant", "content": _text(i, rng), "ts": 0.0}
        counter.message_tokens(m)  # counted once, when it arrived
        out.append(m)
    return out


def _open(kind: str, tmp: str, tag: str) -> Any:
    """The store as the session step opens it for ``timeout: 3600`` (so a load refreshes the expiry)."""
    ttl = TIMEOUT
    if kind == "memory":
        return open_store("memory", name=tag, ttl=ttl)
    if kind == "diskcache":
        return open_store("diskcache", directory=os.path.join(tmp, tag), ttl=ttl)
    if kind == "sqlite":
        url = f"sqlite:///{os.path.join(tmp, tag + '.db')}"
        return open_store("database", database_url=url, table=tag, ttl=ttl)
    if kind == "postgres":
        return open_store("postgres", database_url=POSTGRES_URL, table=tag, kv_table=tag + "_kv", ttl=ttl)
    return open_store("redis", redis_url=REDIS_URL, key_prefix=tag + ":", kv_prefix=tag + ":kv:", ttl=ttl)


class _Counted:
    """The store, counting the messages each load returns (the turn's read, an exact count)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def load(self, session_id: str, **kw: Any) -> Any:
        data = self._store.load(session_id, **kw)
        self.read += len(data.messages) if data is not None else 0
        return data


def _cleanup(store: Any) -> None:
    try:
        if store.backend == "sql" and store.dialect == "postgresql":
            store.drop_tables()
        elif store.backend == "redis":
            keys = list(store._r.scan_iter(match=store.key_prefix + "*", count=1000))
            if keys:
                store._r.delete(*keys)
    finally:
        store.close()


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1)))]


def _store_turns(
    kind: str, sizes: tuple[int, ...], full: list[dict[str, Any]], turns: int, tmp: str
) -> dict[int, dict[str, Any]]:
    """Turns on one store holding a session of each size, interleaved size by size, turn by turn, so
    a change in the machine's load hits every size alike (the flatness ratio compares like with like)."""
    counter = get_counter()
    tag = f"bench_{uuid.uuid4().hex[:8]}"
    store = _open(kind, tmp, tag)
    try:
        for n in sizes:
            for i in range(0, n, 1_000):
                store.append(f"s{n}", full[i : min(n, i + 1_000)])
        policy = policy_from_config({"subtechnique": "memory", "timeout": TIMEOUT, "max_tokens": MAX_TOKENS})
        counted: Any = _Counted(store)  # a Store by duck typing
        mgr = SessionManager(policy, counted, counter=counter)
        rng = random.Random(len(sizes))
        stats: dict[int, dict[str, list[float]]] = {
            n: {"turn": [], "cpu": [], "append": [], "read": []} for n in sizes
        }
        kept: dict[int, int] = {}
        for t in range(WARMUP + turns):
            for n in sizes:
                question, reply = _text(n + 2 * t, rng), _text(n + 2 * t + 1, rng)
                counted.read = 0
                t0, c0 = time.perf_counter(), time.thread_time()
                view = mgr.load(f"s{n}")
                ctx = window_context(
                    view.history,
                    max_tokens=MAX_TOKENS,
                    reserve_tokens=RESERVE,
                    current=question,
                    counter=counter,
                )
                t1 = time.perf_counter()
                mgr.record_turn(f"s{n}", question, reply)
                t2, c2 = time.perf_counter(), time.thread_time()
                if t < WARMUP:
                    continue
                st = stats[n]
                st["turn"].append((t2 - t0) * 1000.0)
                st["cpu"].append((c2 - c0) * 1000.0)
                st["append"].append((t2 - t1) * 1000.0)
                st["read"].append(counted.read)
                kept[n] = ctx.kept["full"]
        return {
            n: {
                "turn_ms": statistics.median(st["turn"]),
                "turn_p95_ms": _p(st["turn"], 0.95),
                "cpu_ms": statistics.median(st["cpu"]),
                "append_max_ms": max(st["append"]),
                "read": int(max(st["read"])),
                "kept": kept[n],
            }
            for n, st in stats.items()
        }
    finally:
        _cleanup(store)


def _trim_messages(history: list[dict[str, Any]], turns: int) -> float | None:
    """Median ms per turn for LangChain's trim_messages over the whole history (tiktoken counter)."""
    try:
        from langchain_core.messages import AIMessage, HumanMessage, trim_messages
    except ImportError:
        return None
    counter = get_counter()
    enc = counter._enc
    roles = {"human": counter.count("user"), "ai": counter.count("assistant")}

    def count(msgs: list[Any]) -> int:
        return (
            sum(TOKENS_PER_MESSAGE + roles.get(m.type, 1) + len(enc.encode_ordinary(m.content)) for m in msgs)
            + REPLY_PRIMING
        )

    lc = [HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"]) for m in history]
    rng = random.Random(1)
    times = []
    for t in range(turns):
        t0 = time.perf_counter()
        lc.append(HumanMessage(_text(len(history) + t, rng)))
        trim_messages(lc, max_tokens=MAX_TOKENS - RESERVE, token_counter=count, strategy="last")
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _llamaindex(history: list[dict[str, Any]], turns: int) -> float | None:
    """Median ms per turn for LlamaIndex's ChatMemoryBuffer (put + get under the same budget)."""
    made = llamaindex_buffer(history, MAX_TOKENS - RESERVE)
    if made is None:
        return None
    buf, ChatMessage = made
    rng = random.Random(2)
    times = []
    for t in range(turns):
        t0 = time.perf_counter()
        buf.put(ChatMessage(role="user", content=_text(len(history) + t, rng)))
        buf.get()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def _available(kind: str) -> bool:
    import socket

    port = {"postgres": 5432, "redis": 6379}.get(kind)
    if port is None:
        return True
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run(quick: bool = False) -> list[dict[str, Any]]:
    """One row per (store, size), plus one per peer and size; ratios against the peers."""
    sizes = SIZES[:2] if quick else SIZES
    turns = 15 if quick else 40
    counter = get_counter()
    full = _messages(sizes[-1], counter)
    rows: list[dict[str, Any]] = []
    peers: dict[int, dict[str, float | None]] = {}
    for n in sizes:
        history = full[:n]
        lc = _trim_messages(list(history), 3 if n >= 100_000 else 5)
        li = _llamaindex(list(history), 2) if n <= 1_000 else None  # >170 s a turn at 10k (issue 11)
        peers[n] = {"trim_messages": lc, "llamaindex": li}
        rows.append(
            {"benchmark": f"trim_messages turn @{n:,}", "unit": "ms", "peer": "LangChain", "peer_value": lc}
        )
        if li is not None:
            rows.append(
                {
                    "benchmark": f"ChatMemoryBuffer turn @{n:,}",
                    "unit": "ms",
                    "peer": "LlamaIndex",
                    "peer_value": li,
                }
            )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in STORES:
            if not _available(kind):
                rows.append({"benchmark": f"{kind} turn", "notes": "server not reachable"})
                continue
            results = _store_turns(kind, sizes, full, turns, tmp)
            first = results[sizes[0]]["turn_ms"]
            for n in sizes:
                r = results[n]
                lc = peers[n]["trim_messages"]
                row = {
                    "benchmark": f"{kind} turn @{n:,}",
                    "unit": "ms",
                    "sibyl_nb": r["turn_ms"],
                    "peer": "LangChain trim_messages",
                    "peer_value": lc,
                    "ratio": (r["turn_ms"] / lc) if lc else None,
                    "goal": f"<= {GOAL_TURN_MS} ms, x{GOAL_FLATNESS} of 1k, append <= {GOAL_APPEND_MS} ms",
                    "p95_ms": r["turn_p95_ms"],
                    "cpu_ms": r["cpu_ms"],
                    "append_max_ms": r["append_max_ms"],
                    "read": r["read"],
                    "flatness": r["turn_ms"] / first,
                    "kept": r["kept"],
                    "load_avg": round(os.getloadavg()[0], 2),  # the machine's 1-minute load, measuring
                }
                if peers[n]["llamaindex"] is not None:
                    row["llamaindex_ms"] = peers[n]["llamaindex"]
                rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k only, fewer turns")
    args = parser.parse_args(argv)
    before = os.getloadavg()
    rows = run(quick=args.quick)
    after = os.getloadavg()
    cols = [
        "benchmark",
        "sibyl_nb",
        "p95_ms",
        "cpu_ms",
        "append_max_ms",
        "read",
        "flatness",
        "kept",
        "peer_value",
        "ratio",
        "llamaindex_ms",
    ]
    table = [cols] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for j, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    ok = True
    for r in rows:
        if r.get("sibyl_nb") is None or r["benchmark"].startswith("memory"):
            continue
        if "@100,000" in r["benchmark"] or ("@10,000" in r["benchmark"] and args.quick):
            ok &= r["sibyl_nb"] <= GOAL_TURN_MS and r["flatness"] <= GOAL_FLATNESS
        ok &= r["append_max_ms"] <= GOAL_APPEND_MS
    print(
        f"\nload average (1/5/15 min): {before[0]:.2f} {before[1]:.2f} {before[2]:.2f} before, "
        f"{after[0]:.2f} {after[1]:.2f} {after[2]:.2f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"goals (turn <= {GOAL_TURN_MS} ms at the largest size, flat x{GOAL_FLATNESS}, append <= "
        f"{GOAL_APPEND_MS} ms): {'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
