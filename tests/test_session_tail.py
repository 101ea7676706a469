"""A turn reads only what its context can use: the session step loads the newest messages (pages
sized from the token budget), not the whole history, on every store; the summary strategy's blocks
keep the conversation's own numbering when the history is such a tail."""

from __future__ import annotations

import pytest
from test_stores import cleanup, open_backend

from sibyl_nb.context.strategies import summary_context
from sibyl_nb.sessions.manager import SessionManager
from sibyl_nb.sessions.policy import policy_from_config


def msg(i: int) -> dict:
    return {"role": "user" if i % 2 == 0 else "assistant", "content": f"message number {i} " + "word " * 40}


class Reads:
    """Wraps a store and records how many messages each load returned."""

    def __init__(self, store):
        self.store = store
        self.loaded: list[int] = []

    def __getattr__(self, name):
        return getattr(self.store, name)

    def load(self, sid, **kw):
        data = self.store.load(sid, **kw)
        self.loaded.append(len(data.messages) if data else 0)
        return data


@pytest.mark.parametrize("backend", ["memory", "diskcache", "sqlite", "redis", "postgres"])
def test_a_turn_loads_only_the_newest_messages_its_budget_can_use(backend, unique, request):
    store = open_backend(backend, unique, request)
    try:
        store.append("s", [msg(i) for i in range(3000)])
        spy = Reads(store)
        mgr = SessionManager(policy_from_config({"subtechnique": "memory", "max_tokens": 2000}), spy)
        view = mgr.load("s")
        assert view.stored_messages == 3000 and view.history[-1]["content"].startswith("message number 2999 ")
        assert sum(m["tokens"] for m in view.history) <= 2000 < sum(m["tokens"] for m in view.history) + 50
        assert sum(spy.loaded) <= 200 and len(spy.loaded) <= 2  # not 3,000
        assert view.left_out == 3000 - len(view.history)
    finally:
        cleanup(store)


def test_summary_blocks_keep_the_conversations_numbering_on_a_tail():
    tail = [msg(i) for i in range(15, 25)]  # messages 16..25 of the whole conversation
    r = summary_context(tail, max_tokens=100_000, summary_frequency=10, offset=15)
    assert r.summary.startswith("Messages 16-20: ")  # the part of block 11-20 that was loaded
    assert r.kept == {"full": 5, "compressed": 0, "summarized": 5}
    assert [m["content"] for m in r.messages[1:]] == [m["content"] for m in tail[5:]]


class Calls(Reads):
    """Also records each load's ``last`` (how many messages it asked for)."""

    def __init__(self, store):
        super().__init__(store)
        self.asked: list[int | None] = []

    def load(self, sid, **kw):
        self.asked.append(kw.get("last"))
        return super().load(sid, **kw)


def same(i: int) -> dict:
    """A message of the same length whatever ``i`` (so what fits does not depend on the numbering)."""
    return {"role": "user" if i % 2 == 0 else "assistant", "content": "a message " + "word " * 40}


def _turns(backend, unique, request, stored, turns=3):
    """Messages read by each of ``turns`` turns over a session of ``stored`` messages."""
    store = open_backend(backend, f"{unique}{stored}", request)
    try:
        for lo in range(0, stored, 1000):
            store.append("s", [same(i) for i in range(lo, min(stored, lo + 1000))])
        pol = policy_from_config({"subtechnique": "memory", "max_tokens": 8000})
        per_turn = []
        for t in range(turns):
            spy = Calls(store)
            mgr = SessionManager(pol, spy)  # a manager per turn, as the session step makes one
            view = mgr.load("s")
            mgr.record_turn("s", f"question {t}", f"answer {t}")
            per_turn.append((len(spy.loaded), sum(spy.loaded), len(view.history)))
        return per_turn
    finally:
        cleanup(store)


@pytest.mark.parametrize("backend", ["memory", "diskcache", "sqlite", "redis", "postgres"])
def test_after_the_first_turn_each_turn_is_one_load_of_what_fits_plus_a_margin(backend, unique, request):
    small = _turns(backend, unique, request, 1_000)
    large = _turns(backend, unique, request, 10_000)
    assert small[1:] == large[1:]  # the same loads, the same messages read, whatever the history's length
    for loads, read, shown in small[1:]:
        assert loads == 1  # the page is sized from what the previous turn needed
        assert shown < read <= shown + 1 + max(8, (shown + 1) // 8)  # one past the budget, plus a margin


FACT = "My name is Alice Moreau and I moved to Lisbon in March 2021."


def _summarising_turns(backend, unique, request, stored, turns=4):
    """(loads, messages read, messages shown, summary) per turn of ``summarization`` + ``max_tokens``."""
    store = open_backend(backend, f"{unique}s{stored}", request)
    try:
        first = {"role": "user", "content": FACT}
        for lo in range(0, stored, 1000):
            batch = [same(i) for i in range(lo, min(stored, lo + 1000))]
            store.append("s", [first, *batch[1:]] if lo == 0 else batch)
        pol = policy_from_config({"subtechnique": "memory", "max_tokens": 2000, "summarization": True})
        out = []
        for t in range(turns):
            spy = Calls(store)
            mgr = SessionManager(pol, spy)
            view = mgr.load("s")
            mgr.record_turn("s", f"question {t}", f"answer {t}")
            out.append((len(spy.loaded), sum(spy.loaded), len(view.history), view.summary))
        return out
    finally:
        cleanup(store)


@pytest.mark.parametrize("backend", ["memory", "diskcache", "sqlite", "redis", "postgres"])
def test_summarization_with_max_tokens_reads_a_bounded_tail_and_keeps_the_oldest_fact(
    backend, unique, request
):
    small = _summarising_turns(backend, unique, request, 1_000)
    large = _summarising_turns(backend, unique, request, 5_000)
    for *_, summary in small + large:
        assert "My name is Alice Moreau and I moved to Lisbon in March 2021." in summary
    # after the first turn (which folds the whole left-out history into the summary once), a turn reads
    # one page: what fits, the messages that left the window since the last turn, and a margin
    assert [r[:3] for r in small[1:]] == [r[:3] for r in large[1:]]
    for loads, read, shown, _ in small[1:]:
        assert loads == 1
        assert shown < read <= shown + 1 + max(8, (shown + 1) // 8)


@pytest.mark.parametrize("backend", ["memory", "diskcache", "sqlite", "redis", "postgres"])
def test_the_folded_summary_never_outlives_its_session(backend, unique, request):
    store = open_backend(backend, unique, request)
    try:
        pol = policy_from_config({"subtechnique": "memory", "max_tokens": 1000, "summarization": True})
        other = "My name is Bruno Keller and I moved to Oslo in May 2019."
        store.append("s", [{"role": "user", "content": FACT}] + [same(i) for i in range(1, 200)])
        assert FACT in SessionManager(pol, store).load("s").summary
        store.delete("s")  # a new session under the same id
        store.append("s", [{"role": "user", "content": other}] + [same(i) for i in range(1, 200)])
        summary = SessionManager(pol, store).load("s").summary
        assert other in summary and "Alice" not in summary
        # the log rewritten (replace): the summary is rebuilt from what is stored now
        store.replace("s", [{"role": "user", "content": FACT}] + [same(i) for i in range(1, 200)])
        summary = SessionManager(pol, store).load("s").summary
        assert FACT in summary and "Bruno" not in summary
    finally:
        cleanup(store)
