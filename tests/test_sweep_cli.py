"""``sibyl sweep`` from the command line, in a fresh interpreter, on files written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

DOC = """
pipelines:
  answer:
    steps:
      - id: retrieve
        use: rag.retrieval
        config: {top_k: 3}
      - id: generate
        use: ai_generation.generation
        config: {provider: primary}
"""


def sibyl(*args, home, cwd):
    env = {**os.environ, "SIBYL_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "sibyl_nb.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)  # fmt: skip


@pytest.fixture
def files(tmp_path):
    (tmp_path / "p.yaml").write_text(DOC)
    (tmp_path / "grid.yaml").write_text("retrieve.config.top_k: [1, 3]\n")
    (tmp_path / "inputs.jsonl").write_text(
        json.dumps({"query": "What is Python used for?", "facts": ["Python"]})
        + "\n"
        + json.dumps("Who created Python?")
        + "\n"
    )
    return tmp_path


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_sibyl_sweep_writes_one_row_per_run(files, suffix):
    out = files / f"results.{suffix}"
    args = ["sweep", "p.yaml", "--grid", "grid.yaml", "--inputs", "inputs.jsonl", "--output", out.name,
            "--metric", "contains:Python", "--metric", "token_count", "--quiet"]  # fmt: skip
    proc = sibyl(*args, home=files / "home", cwd=files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("4 runs (4 ran, 0 reused, 0 failed) -> results.")
    df = pd.read_parquet(out) if suffix == "parquet" else pd.read_csv(out)
    assert len(df) == 4
    assert list(df["retrieve.config.top_k"]) == [1, 3, 1, 3]
    assert list(df["input"]) == ["What is Python used for?"] * 2 + ["Who created Python?"] * 2
    assert df["contains[Python]"].all() and (df["token_count"] > 0).all()
    again = sibyl(*args, home=files / "home", cwd=files)
    assert again.stdout.startswith("4 runs (0 ran, 4 reused, 0 failed)")


def test_sibyl_sweep_refuses_a_grid_key_that_names_no_node(files):
    (files / "grid.yaml").write_text("retreive.config.top_k: [1, 3]\n")
    proc = sibyl("sweep", "p.yaml", "--grid", "grid.yaml", "--inputs", "inputs.jsonl", "--output", "r.csv",
                 home=files / "home", cwd=files)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "sibyl: grid key 'retreive.config.top_k': pipeline 'answer' has no node 'retreive'; "
        "did you mean 'retrieve'? (nodes: retrieve, generate)"
    )
    assert not (files / "r.csv").exists()


def test_sibyl_sweep_refuses_other_output_formats(files):
    proc = sibyl(
        "sweep", "p.yaml", "--inputs", "inputs.jsonl", "--output", "r.pkl", home=files / "home", cwd=files
    )
    assert proc.returncode == 1 and "use a .parquet or .csv file name" in proc.stderr
