"""The red-team corpus (tests/redteam/<category>/*.yaml): malformed and hostile documents, each with
the error class, YAML path and line it must produce, run in subprocesses under an address-space and
CPU limit (resource.setrlimit) with a per-case alarm, so a hang or a memory bomb fails its case
instead of the suite. Prints tried / clear error / other per category."""

from __future__ import annotations

import collections
import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "redteam"
CASES = sorted(CORPUS.glob("*/*.yaml"))
WORKERS = 2
CPU_SECONDS = 120
MEMORY_BYTES = 3 * 2**30


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def _run_batch(paths: list[Path]) -> dict[str, dict]:
    """Run ``paths`` in one limited subprocess; a worker that dies takes only its current case with it
    (that case is 'other'), and the rest are run again in a fresh worker."""
    results: dict[str, dict] = {}
    todo = list(paths)
    while todo:
        proc = subprocess.run(
            [sys.executable, str(CORPUS / "runner.py"), *map(str, todo)],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=_limits,
            env={**os.environ, "REDTEAM_MEMORY_BYTES": str(MEMORY_BYTES)},
        )
        current = None
        for line in proc.stdout.splitlines():
            if line.startswith("START "):
                current = line[6:]
            elif line.startswith("{"):
                row = json.loads(line)
                results[current] = row
                current = None
        done = set(results)
        if current is not None:  # the worker died inside this case
            results[current] = {
                "case": f"{Path(current).parent.name}/{Path(current).name}",
                "category": Path(current).parent.name,
                "outcome": "other",
                "reason": f"worker died (exit {proc.returncode}): {proc.stderr[-300:]}",
            }
            done.add(current)
        rest = [p for p in todo if str(p) not in done]
        if len(rest) == len(todo):  # no progress at all: report, do not loop
            for p in rest:
                results[str(p)] = {
                    "case": p.name,
                    "category": p.parent.name,
                    "outcome": "other",
                    "reason": f"worker failed: {proc.stderr[-300:]}",
                }
            break
        todo = rest
    return results


@pytest.fixture(scope="module")
def outcomes() -> dict[str, dict]:
    batches = [CASES[i::WORKERS] for i in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        merged: dict[str, dict] = {}
        for part in pool.map(_run_batch, batches):
            merged.update(part)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in merged.values():
        counts[row["category"]]["tried"] += 1
        counts[row["category"]][row["outcome"]] += 1
    print()
    for cat, c in sorted(counts.items()):
        print(f"red-team {cat}: tried {c['tried']} / clear error {c['clear']} / other {c['other']}")
    return merged


def test_corpus_is_not_empty():
    cats = {p.parent.name for p in CASES}
    assert {"values", "expressions", "security"} <= cats
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_case(case, outcomes):
    row = outcomes[str(case)]
    assert row["outcome"] == "clear", f"{row.get('reason')} | {row.get('error')}: {row.get('message')}"
