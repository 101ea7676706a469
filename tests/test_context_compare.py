"""``compare_context_strategies`` answers "which strategy keeps what matters": fact recall (given or
extracted), newest-turn completeness, a replay over the whole conversation (recall, cost and
stability per turn), the summarising model's cost; misspelt options are errors."""

from __future__ import annotations

import pytest

from sibyl_nb.context import compare_context_strategies
from sibyl_nb.context.compare import extract_facts
from sibyl_nb.providers.base import Completion

PAD = (
    "That sounds like a sensible plan overall. Many people find it helps to write things down early. "
    "Let me know whenever you want to go through the remaining details together."
)
STATEMENTS = [
    ("My cat is called Biscuit.", ("Biscuit",)),
    ("The wedding is on 14 June in Porto.", ("14 June", "Porto")),
    ("I drive a blue Volvo from 2011.", ("Volvo", "2011")),
    ("My manager Ingrid approved a budget of 9,500 euros.", ("Ingrid", "9,500")),
    ("We decided to paint the kitchen green.", ("kitchen green",)),
    ("My dentist appointment is at 8:15 on Friday.", ("8:15",)),
    ("Our flat number is 42B.", ("42B",)),
    ("I prefer tea over coffee in the morning.", ("prefer tea",)),
]


def conversation():
    out = []
    for text, _ in STATEMENTS:
        out += [{"role": "user", "content": text}, {"role": "assistant", "content": f"Noted. {PAD}"}]
    return out


FACTS = [evidence for _, evidence in STATEMENTS]


def test_recall_counts_the_given_facts_in_what_is_sent():
    h = conversation()
    df = compare_context_strategies(
        h,
        ["window", {"subtechnique": "summary", "summary_frequency": 4, "summary_length": 80}],
        max_tokens=420,
        reserve_tokens=60,
        facts=FACTS,
    )
    w, s = df.loc["window"], df.iloc[1]
    sent_w = df.attrs["facts"]
    assert sent_w == [tuple(f) for f in FACTS] and w["facts_total"] == 8
    # the window keeps only the newest turns: the early facts are gone, and recall says exactly which
    assert 0 < w["recall"] < 1 and w["facts_kept"] == round(w["recall"] * 8)
    assert s["recall"] == 1.0  # one summary per block keeps every fact
    assert bool(w["newest_turn_complete"]) and bool(s["newest_turn_complete"])
    assert "compression_ratio" not in df.columns and 0 < w["history_share"] < 1


def test_facts_are_extracted_from_the_history_when_not_given():
    facts = extract_facts(conversation())
    flat = {e for f in facts for e in f}
    assert {"Biscuit", "Porto", "Volvo", "2011", "Ingrid", "9,500", "8:15", "42B"} <= flat
    assert not any("sensible" in e for e in flat)  # the assistant's filler states no fact
    df = compare_context_strategies(conversation(), ["window"], max_tokens=100_000)
    assert df.loc["window", "recall"] == 1.0 and df.loc["window", "facts_total"] == len(facts)


def test_replay_reports_recall_cost_and_stability_at_every_turn():
    df = compare_context_strategies(
        conversation(), ["window"], max_tokens=420, reserve_tokens=60, facts=FACTS, replay=True
    )
    per_turn = df.attrs["replay"]
    assert list(per_turn["turn"]) == list(range(1, 9))
    assert list(per_turn["messages"]) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert list(per_turn["facts_said"]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert per_turn["recall"].iloc[0] == 1.0 and per_turn["recall"].iloc[-1] == df.loc["window", "recall"]
    assert df.loc["window", "replay_recall_min"] == per_turn["recall"].min()
    assert 0 < df.loc["window", "stability"] <= 1 and per_turn["stability"].isna().iloc[0]
    assert (per_turn["tokens_used"].diff().dropna() >= -200).all()


def test_abstractive_strategies_take_a_provider_and_report_its_cost():
    class Counting:
        name = "counting"

        def __init__(self):
            self.calls = 0

        async def complete(self, messages, **params):
            self.calls += 1
            return Completion(text="Biscuit the cat; wedding 14 June, Porto.", usage={"total_tokens": 50})

    model = Counting()
    spec = {
        "subtechnique": "summary",
        "summary_method": "abstractive",
        "summary_frequency": 4,
        "label": "abs",
    }
    df = compare_context_strategies(conversation(), [spec], max_tokens=2000, facts=FACTS, provider=model)
    assert df.loc["abs", "model_calls"] == model.calls == 3 and df.loc["abs", "model_tokens"] == 150
    with pytest.raises(ValueError, match="pass provider="):
        compare_context_strategies(conversation(), [spec], max_tokens=2000)


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"subtechnique": "window", "windw_size": 3}, "did you mean 'window_size'"),
        ({"subtechnique": "summary", "summary_frequncy": 3}, "did you mean 'summary_frequency'"),
        ({"subtechnique": "window", "summary_method": "abstractive"}, "has no option 'summary_method'"),
        ("hierarchcal", "did you mean 'hierarchical'"),
    ],
)
def test_a_misspelt_strategy_or_option_is_an_error(spec, words):
    with pytest.raises(ValueError, match=words):
        compare_context_strategies(conversation(), [spec])
