"""The crash test: a subprocess runs a pipeline that checkpoints every step and is killed with SIGKILL
in the middle; this process resumes it. Every step's side effect (a line appended to a file) happens
exactly once in total, and the final output equals an uninterrupted run's. DAG with parallel
branches and a cyclic graph killed mid-loop; diskcache, SQLite and PostgreSQL.

Run as a script (``python test_checkpoint_crash.py child DOC WORKFLOW_ID``) it is the child.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sibyl_nb as sb

SLEEP = 0.12  # per step in the child: long enough to kill between steps, short enough to be quick


@sb.technique("crash.step")
async def crash_step(ctx):
    """Slow, side-effecting, deterministic: sleep, append one line, return a digest of the upstream."""
    await asyncio.sleep(float(os.environ.get("CRASH_SLEEP", "0")) * ctx.config.get("slow", 1))
    with open(os.environ["CRASH_LOG"], "a", encoding="utf-8") as f:
        f.write(f"{ctx.node_id}#{ctx.iteration}\n")
    up = ctx.upstream
    digest = hashlib.sha256(json.dumps(up, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "node": ctx.node_id,
        "it": ctx.iteration,
        "from": sorted(up),
        "digest": digest,
        "score": round(0.3 + 0.1 * ctx.iteration, 2),
    }


DAG = """          subtechnique: dag
          graph_definition:
            nodes:
              - {id: expand, technique: crash.step}
              - {id: search_internal, technique: crash.step}
              - {id: search_external, technique: crash.step, config: {slow: 3}}
              - {id: combine, technique: crash.step}
              - {id: analyze, technique: crash.step}
              - {id: synthesize, technique: crash.step}
              - {id: validate, technique: crash.step}
            edges:
              - {from: expand, to: search_internal}
              - {from: expand, to: search_external}
              - {from: search_internal, to: combine}
              - {from: search_external, to: combine}
              - {from: combine, to: analyze}
              - {from: analyze, to: synthesize}
              - {from: synthesize, to: validate}"""

LOOP = """          subtechnique: cyclic
          max_iterations: 10
          graph_definition:
            nodes:
              - {id: generate, technique: crash.step}
              - {id: critique, technique: crash.step}
              - {id: refine, technique: crash.step}
            edges:
              - {from: generate, to: critique}
              - {from: critique, to: refine, condition: "${critique.score} < 0.8"}
              - {from: refine, to: critique}"""


def document(graph: str, checkpointing: str) -> str:
    return f"""
pipelines:
  crashy:
    steps:
      - use: workflow_orchestration.graph
        config:
{graph}
shops:
  infrastructure:
    config:
      checkpointing: {checkpointing}
"""


def child(doc_path: str, workflow_id: str) -> None:
    pipe = sb.Pipeline.from_yaml(Path(doc_path))
    pipe.run({"query": "what happened?"}, workflow_id=workflow_id)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def crash_and_resume(tmp_path, graph: str, checkpointing: str, kill_after: int, monkeypatch):
    # the uninterrupted reference run (no checkpoints, no sleep)
    monkeypatch.setenv("CRASH_SLEEP", "0")
    monkeypatch.setenv("CRASH_LOG", str(tmp_path / "reference.log"))
    expected = sb.Pipeline.from_yaml(document(graph, "{enabled: false}")).run({"query": "what happened?"})
    reference = lines(tmp_path / "reference.log")

    doc_path = tmp_path / "crashy.yaml"
    doc_path.write_text(document(graph, checkpointing), encoding="utf-8")
    log = tmp_path / "crash.log"
    workflow_id = f"crash-{tmp_path.name}"
    env = dict(os.environ, CRASH_SLEEP=str(SLEEP), CRASH_LOG=str(log), PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", str(doc_path), workflow_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while len(lines(log)) < kill_after:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.005)
        time.sleep(SLEEP / 3)  # inside the next step's sleep: between a side effect and its checkpoint is µs
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    before = lines(log)
    assert 0 < len(before) < len(reference), "the kill did not land mid-run"

    monkeypatch.setenv("CRASH_LOG", str(log))
    monkeypatch.setenv("CRASH_SLEEP", "0")
    pipe = sb.Pipeline.from_yaml(doc_path)
    cp = pipe.load_checkpoint(workflow_id)
    assert cp is not None and cp.status == "running"
    result = pipe.resume_sync(workflow_id)

    after = lines(log)
    assert len(after) > len(before)
    assert sorted(after) == sorted(reference)  # every step ran exactly once in total
    assert len(set(after)) == len(after)
    assert result.output == expected.output  # same final output as an uninterrupted run
    assert result.outputs == expected.outputs
    if graph is LOOP:  # same iterations in the same order (a DAG's parallel pair may finish either way)
        assert [(r.node_id, r.iteration, r.status) for r in result.records] == [
            (r.node_id, r.iteration, r.status) for r in expected.records
        ]
    assert pipe.load_checkpoint(workflow_id).status == "finished"
    return pipe, workflow_id


def _config(storage: str, tmp_path, postgres_url=None) -> str:
    if storage == "diskcache":
        return "{enabled: true, frequency: 1}"
    if storage == "sqlite":
        return (
            f'{{enabled: true, frequency: 1, storage: database, database_url: "sqlite:///{tmp_path}/ck.db"}}'
        )
    return f'{{enabled: true, frequency: 1, storage: database, database_url: "{postgres_url}"}}'


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["diskcache", "sqlite"])
@pytest.mark.parametrize("kill_after", [2, 4])
def test_sigkill_mid_dag_then_resume(storage, kill_after, tmp_path, monkeypatch):
    # after 2 steps the slow search_external is a running task: it resumes with its upstream intact
    crash_and_resume(
        tmp_path, DAG, _config(storage, tmp_path), kill_after=kill_after, monkeypatch=monkeypatch
    )


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["diskcache", "sqlite"])
def test_sigkill_mid_loop_then_resume(storage, tmp_path, monkeypatch):
    crash_and_resume(tmp_path, LOOP, _config(storage, tmp_path), kill_after=5, monkeypatch=monkeypatch)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("graph,kill_after", [(DAG, 2), (LOOP, 6)], ids=["dag", "loop"])
def test_sigkill_then_resume_on_postgresql(graph, kill_after, tmp_path, monkeypatch, postgres_url):
    pipe, workflow_id = crash_and_resume(
        tmp_path,
        graph,
        _config("postgres", tmp_path, postgres_url),
        kill_after=kill_after,
        monkeypatch=monkeypatch,
    )
    assert pipe.delete_checkpoint(workflow_id) > 0


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    child(sys.argv[2], sys.argv[3])
