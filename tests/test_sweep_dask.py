"""A sweep with a Dask executor: every run is a task on a real LocalCluster (2 worker processes)."""

from __future__ import annotations

import logging
import os
import time

import pandas as pd
import pytest

import sibyl_nb as sb

distributed = pytest.importorskip("distributed")

DOC = """
steps:
  - id: where
    use: sweepdask.where
    config: {suffix: "!"}
"""


@sb.technique("sweepdask.where", config_schema={"suffix": str})
def _where(ctx):
    time.sleep(0.05)  # long enough that both workers get cells
    return {"answer": ctx.input["query"] + ctx.config["suffix"], "pid": os.getpid()}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0", silence_logs=logging.ERROR
    ) as cluster, distributed.Client(cluster, set_as_default=False) as c:  # fmt: skip
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.mark.timeout(120)
def test_dask_sweep_runs_each_run_on_a_worker_with_the_same_rows(client, tmp_path, monkeypatch):
    monkeypatch.setenv("SIBYL_HOME", str(tmp_path))
    inputs = [{"query": q} for q in ("a", "b", "c", "d")]
    grid = {"where.config.suffix": ["!", "?"]}
    length = sb.metrics.token_count()
    df = sb.sweep(sb.Pipeline.from_yaml(DOC), inputs, grid, [length], executor=client, name="on_dask",
                  fields=["pid"], progress=False, max_concurrent=4)  # fmt: skip
    local = sb.sweep(sb.Pipeline.from_yaml(DOC), inputs, grid, [length], name="local_twin", fields=["pid"],
                     progress=False)  # fmt: skip
    assert list(df.output) == [q + s for q in "abcd" for s in "!?"] == list(local.output)
    assert list(df.token_count) == list(local.token_count)
    workers = {pid for pid in client.run(os.getpid).values()}
    assert set(df.pid) <= workers and len(set(df.pid)) == 2  # both worker processes ran cells
    assert os.getpid() not in set(df.pid) and set(local.pid) == {os.getpid()}
    again = sb.sweep(sb.Pipeline.from_yaml(DOC), inputs, grid, [length], executor=client, name="on_dask",
                     fields=["pid"], progress=False)  # fmt: skip
    pd.testing.assert_frame_equal(df, again)  # stored: nothing is submitted again
