"""``workflow_orchestration.context_management`` and ``compare_context_strategies``."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from test_context_strategies import make_history

from sibyl_nb.context import ALLOCATION_KEYS, compare_context_strategies
from sibyl_nb.providers.base import Completion
from sibyl_nb.techniques.registry import get_technique
from sibyl_nb.testing import StandaloneRun, make_context

NAME = "workflow_orchestration.context_management"


def run_step(config, history, *, query="What's it used for?", summary="", providers=None):
    run = StandaloneRun(
        input={"message": query},
        session={"conversation_history": history, "conversation_summary": summary},
        providers=providers,
    )
    ctx = make_context(config, run=run, technique=NAME, node_id="context")
    out = asyncio.run(get_technique(NAME).fn(ctx))
    return out, run


def test_registered_with_subtechniques_and_schema():
    info = get_technique(NAME)
    assert info.subtechniques == ("window", "compression", "summary", "hierarchical")
    assert "max_tokens" in info.config_schema and "messages" in info.outputs


@pytest.mark.parametrize("strategy", ["window", "compression", "summary", "hierarchical"])
def test_sets_session_fields_and_emits_allocation(strategy):
    history = make_history(120)
    out, run = run_step(
        {
            "subtechnique": strategy,
            "max_tokens": 4000,
            "reserve_tokens": 500,
            "system_prompt": "You are a helpful assistant.",
        },
        history,
    )
    assert out["strategy"] == strategy
    assert set(out) >= {"messages", "allocation", "strategy", "kept", "tokens_used"}
    assert sum(out["allocation"].values()) == 4000
    assert set(out["allocation"]) == set(ALLOCATION_KEYS)
    assert run.session["context_messages"] == out["messages"]
    assert run.session["token_allocation"] == out["allocation"]
    kind, node, _, data = run.events[-1]
    assert kind == "token_allocation" and node == "context"
    assert data["strategy"] == strategy and data["max_tokens"] == 4000
    assert data["allocation"] == out["allocation"]
    assert out["allocation"]["system"] > 0 and out["allocation"]["current"] > 3
    assert out["history_length"] == 120


def test_seed_hierarchical_defaults():
    out, _ = run_step(
        {"subtechnique": "hierarchical", "max_tokens": 8000}, make_history(200, sentences=(1, 2))
    )
    assert out["kept"] == {"full": 5, "compressed": 10, "summarized": 100}


def test_empty_history_first_turn():
    out, run = run_step({"subtechnique": "window"}, [])
    assert out["messages"] == [] and run.session["context_messages"] == []
    assert sum(out["allocation"].values()) == 8000


def test_abstractive_uses_the_provider():
    class Fake:
        name = "fake"

        def __init__(self):
            self.calls = []

        async def complete(self, messages, **params):
            self.calls.append((messages, params))
            return Completion(text="They discussed Python basics and its uses.")

    fake = Fake()
    out, _ = run_step(
        {
            "subtechnique": "compression",
            "compression_method": "abstractive",
            "max_tokens": 3000,
            "reserve_tokens": 300,
            "compression_ratio": 0.3,
        },
        make_history(100),
        providers={"primary": fake},
    )
    assert len(fake.calls) == 1
    prompt, params = fake.calls[0]
    assert "Compress" in prompt[0]["content"] and params["max_tokens"] > 0
    assert "They discussed Python basics" in out["messages"][0]["content"]
    assert sum(out["allocation"].values()) == 3000

    out, _ = run_step(
        {"subtechnique": "summary", "summary_method": "abstractive", "max_tokens": 8000},
        make_history(25),
        providers={"primary": fake},
    )
    assert len(fake.calls) == 3 and out["kept"]["summarized"] == 20  # one call per block of 10
    assert out["summary"].count("They discussed Python basics") == 2
    assert "Messages 1-10: " in out["summary"] and "Messages 11-20: " in out["summary"]
    run_step(
        {"subtechnique": "summary", "summary_method": "abstractive", "max_tokens": 8000},
        make_history(26),
        providers={"primary": fake},
    )
    assert len(fake.calls) == 3  # the next turn: both blocks are complete and unchanged, summarised once


def test_compare_context_strategies_dataframe():
    history = make_history(300)
    df = compare_context_strategies(
        history,
        [
            "window",
            "summary",
            {"subtechnique": "compression", "compression_ratio": 0.3},
            {"subtechnique": "hierarchical", "label": "hier"},
        ],
        max_tokens=6000,
        system_prompt="Be brief.",
        current="And now?",
    )
    assert list(df.index) == ["window", "summary", "compression (compression_ratio=0.3)", "hier"]
    for col in (
        "tokens_used",
        "kept_full",
        "kept_compressed",
        "kept_summarized",
        "dropped",
        "history_share",
        "time_ms",
        *(f"alloc_{k}" for k in ALLOCATION_KEYS),
    ):
        assert col in df.columns
    alloc = df[[f"alloc_{k}" for k in ALLOCATION_KEYS]].sum(axis=1)
    assert (alloc == df["max_tokens"]).all()
    assert (df["history_share"] > 0).all() and (df["history_share"] < 1).all()
    assert df.loc["hier", "kept_full"] == 5 and df.loc["hier", "kept_summarized"] == 100
    assert df.loc["window", "kept_compressed"] == 0
    assert (df["time_ms"] >= 0).all()
    with pytest.raises(ValueError, match="subtechnique"):
        compare_context_strategies(history, [{"max_tokens": 10}])


def test_importing_context_does_not_import_pandas():
    code = (
        "import sys, sibyl_nb.context, sibyl_nb.context.technique, sibyl_nb.sessions.technique, "
        "sibyl_nb.stores; print('pandas' in sys.modules, 'sqlalchemy' in sys.modules, 'redis' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]
