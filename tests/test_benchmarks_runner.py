"""The benchmark runner's bookkeeping (no timing here): suites are found by dropping a module in
``benchmarks/``, rows of either shape land in one table of ratios per peer, goals are checked."""

from __future__ import annotations

from benchmarks import discover
from benchmarks.__main__ import format_table, goal_met, markdown_report, normalise


def test_every_module_with_a_run_function_is_a_suite_and_engine_leads():
    suites = discover()
    names = [n for n, _ in suites]
    assert names[0] == "engine"
    assert {"engine", "checkpoint", "context", "dask"} <= set(names)
    assert "peers" not in names and "__main__" not in names
    assert dict(suites)["dask"] == "benchmarks.dask_bench"  # NAME_bench is listed as NAME


def test_a_row_with_every_peer_gets_a_ratio_per_peer_and_against_the_fastest():
    row = normalise(
        "engine",
        {
            "benchmark": "1-step run",
            "unit": "us",
            "sibyl_nb": 10.0,
            "peers": {"Hamilton": 20.0, "LangGraph": 400.0, "Burr": None},
            "goal": "<= 0.5 x fastest peer",
        },
    )
    assert row["ratios"] == {"Hamilton": 0.5, "LangGraph": 0.025, "Burr": None}
    assert row["fastest"] == "Hamilton" and row["vs_fastest"] == 0.5
    assert row["met"] is True
    table = format_table([row])
    assert "20.00 (0.5x)" in table and "n/a" in table and "0.5x Hamilton" in table
    report = markdown_report([row], [("engine", "ran", 1.0)], quick=True)
    assert "| sibyl_nb | Hamilton | Burr | LangGraph | vs fastest peer |" in report
    assert "## Machine" in report and "## Versions" in report and "sf-hamilton" in report


def test_an_old_style_row_with_one_peer_column_still_fits():
    row = normalise("checkpoint", {"benchmark": "x", "unit": "ms", "sibyl_nb": 2.0, "langgraph": 8.0})
    assert row["peers"] == {"LangGraph": 8.0} and row["ratios"] == {"LangGraph": 0.25}


def test_goals_in_absolute_units_are_checked_in_the_rows_unit():
    assert goal_met({"goal": "<= 15 us", "unit": "us", "sibyl_nb": 14.0}) is True
    assert goal_met({"goal": "<= 100 ms", "unit": "s", "sibyl_nb": 0.12}) is False
    assert goal_met({"goal": "<= 1 s; per node ...", "unit": "s", "sibyl_nb": 0.8}) is True
    assert goal_met({"goal": "flat", "unit": "s", "sibyl_nb": 0.8}) is None
    assert goal_met({"goal": "<= 0.2 x fastest peer", "unit": "ms", "sibyl_nb": 1.0}) is None  # no peer
