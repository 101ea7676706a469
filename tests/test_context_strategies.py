"""Known answers for the four context strategies, and the allocation invariant."""

from __future__ import annotations

import random

import pytest

from sibyl_nb.context import (
    ALLOCATION_KEYS,
    build_context,
    compress_text,
    compression_context,
    hierarchical_context,
    summarize_messages,
    summary_context,
    window_context,
)
from sibyl_nb.context.extractive import split_clauses, split_sentences
from sibyl_nb.context.strategies import COMPRESSED_PREFIX, SUMMARY_PREFIX, parse_levels
from sibyl_nb.context.tokens import REPLY_PRIMING, get_counter

C = get_counter()
VOCAB = (
    "python data model context token window summary language program compute memory network graph "
    "node edge scheduler pipeline session cache store budget answer question retrieval"
)
WORDS = VOCAB.split()


def sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize() + "."


def make_history(n, seed=0, sentences=(3, 8)):
    rng = random.Random(seed)
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"Turn {i}. " + " ".join(sentence(rng) for _ in range(rng.randint(*sentences))),
        }
        for i in range(n)
    ]


def sized(tokens):
    """Messages that really cost exactly ``tokens`` each (3 + 1 for the role + the content; >= 5)."""
    out = []
    for i, t in enumerate(tokens):
        name = f"m{i}"
        pad = t - 4 - C.count(name)
        assert pad >= 0, f"a message named {name} costs at least {4 + C.count(name)} tokens"
        m = {"role": "user", "content": name + " x" * pad}
        assert C.message_tokens(m) == t
        out.append(m)
    return out


def names(messages):
    """The ``m<i>`` names of messages made by :func:`sized`."""
    return [m["content"].split()[0] for m in messages]


def assert_sums(result):
    assert set(result.allocation) == set(ALLOCATION_KEYS)
    assert sum(result.allocation.values()) == result.max_tokens


# ------------------------------------------------------------------------------------ window
def test_window_keeps_longest_suffix_that_fits():
    history = sized([100] * 20)
    system, current = "You are a helpful assistant.", "And then?"
    s_tok = C.message_tokens({"role": "system", "content": system})
    c_tok = C.message_tokens({"role": "user", "content": current}) + REPLY_PRIMING
    r = window_context(history, max_tokens=1000, reserve_tokens=200, system_prompt=system, current=current)
    budget = 1000 - 200 - s_tok - c_tok
    assert r.kept["full"] == budget // 100
    assert names(r.messages) == [f"m{i}" for i in range(20 - budget // 100, 20)]
    assert r.allocation == {
        "system": s_tok,
        "summary": 0,
        "compressed": 0,
        "recent": 100 * (budget // 100),
        "current": c_tok,
        "reserved": 200,
        "free": budget - 100 * (budget // 100),
    }
    assert r.dropped == 20 - budget // 100
    assert_sums(r)


def test_window_stops_at_the_first_message_that_does_not_fit():
    # budget for history: 1000 - 100 reserve - 3 priming = 897. Suffix 300+300+200 = 800; + 500 > 897.
    history = sized([10, 10, 500, 200, 300, 300])
    r = window_context(history, max_tokens=1000, reserve_tokens=100)
    assert names(r.messages) == ["m3", "m4", "m5"]
    assert r.allocation["recent"] == 800 and r.allocation["free"] == 97
    assert_sums(r)


@pytest.mark.parametrize("seed", range(20))
def test_window_property_random(seed):
    rng = random.Random(seed)
    tokens = [rng.randint(7, 400) for _ in range(rng.randint(0, 60))]
    max_tokens, reserve = rng.randint(200, 5000), rng.randint(0, 150)
    window_size = rng.choice([None, rng.randint(1, 30)])
    r = window_context(sized(tokens), max_tokens=max_tokens, reserve_tokens=reserve, window_size=window_size)
    budget = max_tokens - reserve - REPLY_PRIMING
    k = r.kept["full"]
    assert sum(tokens[len(tokens) - k :]) <= budget
    limit = len(tokens) if window_size is None else min(window_size, len(tokens))
    assert k <= limit
    if k < limit:  # one more would not fit
        assert sum(tokens[len(tokens) - k - 1 :]) > budget
    assert_sums(r)


def test_window_size_caps_messages_and_messages_are_clean():
    history = make_history(30)
    r = window_context(history, max_tokens=100_000, window_size=10)
    assert r.kept["full"] == 10
    assert all(set(m) == {"role", "content"} for m in r.messages)  # no cached bookkeeping sent
    assert "tokens" in history[-1]  # ...which stays on the history


def test_window_can_include_the_stored_summary():
    r = window_context(
        sized([50] * 5), max_tokens=1000, reserve_tokens=0, summary="Earlier: hello.", include_summary=True
    )
    assert r.messages[0]["role"] == "system" and r.messages[0]["content"].startswith(SUMMARY_PREFIX)
    assert r.allocation["summary"] == C.message_tokens(r.messages[0])
    assert_sums(r)


def test_over_budget_is_reported_and_still_sums():
    r = window_context(sized([10]), max_tokens=100, reserve_tokens=90, system_prompt="word " * 50)
    assert r.over_budget and r.allocation["free"] < 0 and r.kept["full"] == 0
    assert_sums(r)


# ------------------------------------------------------------------------------------ compression
@pytest.mark.parametrize("ratio", [0.2, 0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("seed", range(5))
def test_extractive_compression_honours_ratio(ratio, seed):
    text = make_history(1, seed=seed, sentences=(8, 20))[0]["content"]
    total = C.count(text)
    out, n = compress_text(text, ratio, C)
    assert n == C.count(out)
    target = round(ratio * total)
    # whole sentences only: never above the target, short of it by less than the longest sentence
    longest = max(C.count(s) for s in split_sentences(text))
    assert target - longest - 2 < n <= target, (n, total, ratio)
    assert all(s in split_sentences(text) for s in split_sentences(out))  # no prefix, nothing invented


def test_compression_keeps_whole_clauses_and_short_messages_whole():
    assert (
        compress_text("I land at Haneda at 6:40 on March 3.", 0.5, C)[0]
        == "I land at Haneda at 6:40 on March 3."
    )
    long = (
        "Thanks for the list, it helps a lot. I booked the Keio Plaza for six nights, paid 1,200 dollars, "
        "and the check-in is at 3 pm. The weather looked fine when I checked it last week, more or less."
    )
    out, _ = compress_text(long, 0.5, C)
    assert "Keio Plaza" in out and "…" not in out

    def bare(x):
        return x.rstrip(",;:.")

    pieces = {bare(c) for s in split_sentences(long) for c in split_clauses(s)}
    assert all(bare(c) in pieces for s in split_sentences(out) for c in split_clauses(s))


def test_extractive_compression_keeps_important_sentences_in_order():
    text = (
        "The user asked about Python. Python is a programming language. It was created by Guido van "
        "Rossum. Python is known for simplicity. The cafeteria serves soup on Tuesdays. Python has many "
        "use cases in data science and web development."
    )
    out, _ = compress_text(text, 0.5, C)
    assert "Python is a programming language." in out
    assert "cafeteria" not in out
    kept = [s for s in ("asked about Python", "programming language", "Guido", "simplicity") if s in out]
    assert [out.index(s) for s in kept] == sorted(out.index(s) for s in kept)
    assert compress_text(text, 0.5, C) == (out, C.count(out))  # deterministic


def test_compression_strategy_compresses_older_and_keeps_recent_full():
    history = make_history(60)
    r = compression_context(history, max_tokens=4000, reserve_tokens=500, compression_ratio=0.5)
    assert r.kept["full"] >= 1 and r.kept["compressed"] >= 1
    assert r.kept["full"] + r.kept["compressed"] + r.dropped == 60
    full = r.messages[-r.kept["full"] :]
    assert [m["content"] for m in full] == [m["content"] for m in history[-r.kept["full"] :]]
    older = history[60 - r.kept["full"] - r.kept["compressed"] : 60 - r.kept["full"]]
    for orig, comp in zip(older, r.messages[: r.kept["compressed"]], strict=True):
        assert len(comp["content"]) < len(orig["content"])
    assert abs(r.details["ratio_achieved"] - 0.5) < 0.1
    assert r.allocation["free"] >= 0
    assert_sums(r)


def test_compression_sends_everything_when_it_fits():
    history = make_history(4)
    r = compression_context(history, max_tokens=100_000)
    assert r.kept == {"full": 4, "compressed": 0, "summarized": 0}
    assert_sums(r)


def test_abstractive_compression_uses_the_model():
    calls = []

    def abstract(messages, target):
        calls.append((len(messages), target))
        return "Discussion covered Python basics, its creator, and main use cases."

    history = make_history(80)
    r = compression_context(
        history,
        max_tokens=3000,
        reserve_tokens=300,
        compression_method="abstractive",
        compression_ratio=0.3,
        abstract=abstract,
    )
    assert len(calls) == 1 and calls[0][0] == r.kept["compressed"] > 0
    assert r.messages[0]["content"].startswith(COMPRESSED_PREFIX + "Discussion covered")
    assert_sums(r)
    with pytest.raises(ValueError, match="abstractive"):
        compression_context(history, max_tokens=3000, compression_method="abstractive")


# ------------------------------------------------------------------------------------ summary
def test_summary_strategy_blocks():
    history = make_history(25)
    r = summary_context(history, max_tokens=100_000, summary_frequency=10, summary_length=120)
    assert r.kept == {"full": 5, "compressed": 0, "summarized": 20}
    assert r.messages[0]["content"].startswith(SUMMARY_PREFIX)
    lines = r.summary.split("\n")  # one summary per block, as the seed draws it
    assert [line.split(":")[0] for line in lines] == ["Messages 1-10", "Messages 11-20"]
    assert all(C.count(line.split(": ", 1)[1]) <= 120 for line in lines)
    assert [m["content"] for m in r.messages[1:]] == [m["content"] for m in history[20:]]
    r20 = summary_context(make_history(20), max_tokens=100_000, summary_frequency=10)
    assert r20.kept == {"full": 10, "compressed": 0, "summarized": 10}
    r10 = summary_context(make_history(10), max_tokens=100_000, summary_frequency=10)
    assert r10.kept == {"full": 10, "compressed": 0, "summarized": 0} and r10.allocation["summary"] == 0
    assert_sums(r)


def test_summary_is_deterministic_and_bounded():
    history = make_history(50)
    a = summarize_messages(history, 150, counter=C)
    b = summarize_messages(history, 150, counter=C)
    assert a == b and 0 < C.count(a) <= 150
    assert a.startswith("User:") or a.startswith("Assistant:")
    prior = "Earlier the user said their name is Ada Lovelace, born on 10 December 1815."
    with_prior = summarize_messages(history, 150, prior=prior, counter=C)
    assert with_prior.startswith(prior) and C.count(with_prior) <= 150


def test_summary_strategy_includes_the_stored_summary():
    r = summary_context(make_history(5), max_tokens=10_000, summary="User asked about Python basics.")
    assert "User asked about Python basics." in r.messages[0]["content"]
    assert r.kept["full"] == 5
    assert_sums(r)


# ------------------------------------------------------------------------------------ hierarchical
def test_hierarchical_default_levels_hold_configured_counts():
    history = make_history(200)
    r = hierarchical_context(history, max_tokens=100_000)
    assert r.kept == {"full": 5, "compressed": 10, "summarized": 100}
    assert r.dropped == 85
    assert r.messages[0]["content"].startswith(SUMMARY_PREFIX)
    comp = r.messages[1:11]
    for orig, c in zip(history[185:195], comp, strict=True):
        assert c["role"] == orig["role"] and len(c["content"]) < len(orig["content"])
    assert [m["content"] for m in r.messages[11:]] == [m["content"] for m in history[195:]]
    assert_sums(r)


def test_hierarchical_custom_levels_seed_form():
    levels = [
        {"name": "full", "messages": 3},
        {"name": "compressed", "messages": 4},
        {"name": "summary", "messages": 6},
    ]
    r = hierarchical_context(make_history(30), max_tokens=100_000, levels=levels)
    assert r.kept == {"full": 3, "compressed": 4, "summarized": 6}
    assert len(r.messages) == 1 + 4 + 3
    assert parse_levels({"full": 2}) == {"full": 2, "compressed": 10, "summary": 100}
    with pytest.raises(ValueError, match="unknown context level"):
        parse_levels([{"name": "bogus", "messages": 1}])


def test_hierarchical_summarises_only_the_blocks_that_changed(monkeypatch):
    import sibyl_nb.context.strategies as strategies

    summarised: list[int] = []
    real = strategies.summarize_messages

    def counting(messages, *args, **kwargs):
        summarised.append(len(messages))
        return real(messages, *args, **kwargs)

    monkeypatch.setattr(strategies, "summarize_messages", counting)
    conversation = make_history(400, seed=7)
    per_turn, results = [], []
    for end in range(200, 222, 2):  # eleven turns, two messages each
        summarised.clear()
        r = hierarchical_context(conversation[:end], max_tokens=100_000)
        per_turn.append(sum(summarised))
        results.append(r)
        assert r.kept == {"full": 5, "compressed": 10, "summarized": 100}
    assert per_turn[0] == 100  # the first turn summarises the level's 100 messages, block by block
    # later turns: only the blocks whose messages changed: the oldest (cut: at most 9 messages) and the
    # newest (grown: at most 9, or the 10 of a block just completed and the first of the next)
    block = strategies.SUMMARY_BLOCK
    assert block == 10 and max(per_turn[1:]) == 2 * block and min(per_turn[1:]) == block, per_turn
    # and the memo changes nothing: the same summaries as computed from scratch
    strategies._BLOCK_CACHE.clear()
    strategies._COMBINED.clear()
    fresh = [hierarchical_context(conversation[:end], max_tokens=100_000) for end in range(200, 222, 2)]
    assert [r.summary for r in fresh] == [r.summary for r in results]


def _turns(history, turns, before=None, **options):
    """``turns`` successive turns, one at a time: a message appended, then the context selected
    (after ``before()``, if given)."""
    rng = random.Random(len(history))
    for _ in range(turns):
        i = len(history)
        history.append(
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"Turn {i}. " + " ".join(sentence(rng) for _ in range(rng.randint(4, 8))),
            }
        )
        if before is not None:
            before()
        yield hierarchical_context(history, **options)


@pytest.mark.parametrize("size", [40, 400])
def test_hierarchical_compresses_each_message_once_in_its_life(size):
    """A turn compresses only the one message that moved into the compressed level, whatever the
    history's length: the other nine were compressed on earlier turns."""
    from sibyl_nb.context import extractive
    from sibyl_nb.context.strategies import clear_caches

    clear_caches()
    history = make_history(size, seed=size)
    hierarchical_context(history, max_tokens=100_000)
    first = extractive._compress.cache_info().misses
    assert first == 10  # the first turn compresses the whole compressed level
    counts = []
    for r in _turns(history, 12, max_tokens=100_000):
        counts.append(extractive._compress.cache_info().misses - first)
        first = extractive._compress.cache_info().misses
        assert r.kept["compressed"] == 10
    assert counts == [1] * 12


def test_hierarchical_caches_change_no_output():
    """30 successive turns select exactly the same context with the memos warm as computed from
    scratch (every cache cleared before each turn)."""
    from sibyl_nb.context.strategies import clear_caches

    options = {"max_tokens": 8_000, "reserve_tokens": 2_000}
    clear_caches()
    warm = [r.to_dict() for r in _turns(make_history(150, seed=3), 30, **options)]
    cold = [r.to_dict() for r in _turns(make_history(150, seed=3), 30, clear_caches, **options)]
    assert len(warm) == len(cold) == 30
    assert warm == cold


def test_hierarchical_short_history_and_tight_budget():
    r = hierarchical_context(make_history(3), max_tokens=100_000)
    assert r.kept == {"full": 3, "compressed": 0, "summarized": 0} and r.allocation["summary"] == 0
    history = make_history(200)
    tight = hierarchical_context(history, max_tokens=1500, reserve_tokens=200)
    assert tight.allocation["free"] >= 0
    assert tight.kept["full"] >= 1
    assert_sums(tight)


@pytest.mark.parametrize("strategy", ["window", "compression", "summary", "hierarchical"])
@pytest.mark.parametrize("seed", range(6))
def test_allocation_sums_exactly(strategy, seed):
    rng = random.Random(seed)
    history = make_history(rng.randint(0, 80), seed=seed)
    r = build_context(
        strategy,
        history,
        max_tokens=rng.randint(500, 12000),
        reserve_tokens=rng.randint(0, 400),
        system_prompt=rng.choice(["", "You are a helpful assistant."]),
        current="What next?",
        summary=rng.choice(["", "Earlier: greetings."]),
        window_size=rng.choice([None, 8]),
    )
    assert_sums(r)
    a = r.allocation
    assert r.tokens_used == a["system"] + a["summary"] + a["compressed"] + a["recent"] + a["current"]
    sent = sum(C.message_tokens(dict(m)) for m in r.messages)
    assert sent == a["summary"] + a["compressed"] + a["recent"]  # the allocation is what is sent


def test_unknown_strategy():
    with pytest.raises(ValueError, match="unknown context strategy"):
        build_context("nope", [])
