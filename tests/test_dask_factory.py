"""``executor:`` forms, load-time errors with YAML lines, the missing-extra message, and that neither
``import sibyl_nb`` nor loading a pipeline imports dask. No cluster needed: these are fast."""

from __future__ import annotations

import subprocess
import sys

import pytest

import sibyl_nb as sb
from sibyl_nb.engine import executor_factory
from sibyl_nb.engine.executor_factory import make_executor, resolve_executor
from sibyl_nb.engine.executors import LocalExecutor
from sibyl_nb.errors import SibylError, SpecError

STEPS = "    steps:\n      - use: workflow_orchestration.passthrough\n        id: a\n"


def _doc(executor_yaml: str) -> str:
    return "pipelines:\n  p:\n" + executor_yaml + STEPS


def test_local_forms():
    assert isinstance(make_executor(None), LocalExecutor)
    assert isinstance(make_executor("local"), LocalExecutor)
    assert isinstance(make_executor({"kind": "local"}), LocalExecutor)
    custom = LocalExecutor()
    assert make_executor(custom) is custom


def test_dask_forms_share_one_executor_and_connect_lazily(monkeypatch):
    pytest.importorskip("distributed")
    from sibyl_nb.engine.dask_executor import DaskExecutor

    monkeypatch.setattr(executor_factory, "_SHARED", {})
    monkeypatch.setenv("SIBYL_TEST_DASK", "tcp://10.1.2.3:8786")
    a = make_executor({"kind": "dask", "scheduler_address": "${SIBYL_TEST_DASK}", "retries": 1})
    assert isinstance(a, DaskExecutor) and a.scheduler_address == "tcp://10.1.2.3:8786" and a.retries == 1
    assert a._client is None  # nothing connected yet
    assert make_executor({"kind": "dask", "address": "10.1.2.3:8786", "retries": 1}) is a
    b = make_executor("tcp://10.9.9.9:8786")
    assert b.scheduler_address == "tcp://10.9.9.9:8786" and b is not a
    assert make_executor("dask").scheduler_address is None
    c = make_executor({"kind": "dask", "resources": {"GPU": 1}, "priority": 5})
    assert c.submit_options == {"resources": {"GPU": 1}, "priority": 5}


def test_pipeline_builds_the_executor_when_it_runs_not_when_it_loads(monkeypatch):
    pytest.importorskip("distributed")
    from sibyl_nb.engine.dask_executor import DaskExecutor

    monkeypatch.setattr(executor_factory, "_SHARED", {})
    pipe = sb.Pipeline.from_yaml(_doc("    executor: dask\n"))
    assert pipe.spec.executor == "dask" and pipe.executor is None
    chosen = resolve_executor(None, pipe)
    assert isinstance(chosen, DaskExecutor) and pipe.executor is chosen
    # a run-level executor wins, and a local override runs here
    assert isinstance(resolve_executor("local", pipe), LocalExecutor)
    assert pipe.run({"x": 1}, executor="local").output == {"x": 1}


@pytest.mark.parametrize(
    "executor_yaml, message, line",
    [
        ("    executor: ray\n", "executor 'ray' is not one of: local, dask", 3),
        ("    executor: dsak\n", "did you mean 'dask'", 3),
        (
            "    executor:\n      kind: dask\n      adress: tcp://x:1\n",
            "unknown key 'adress' in executor; did you mean 'address'",
            3,
        ),
        ("    executor:\n      kind: spark\n", "executor kind 'spark' is not one of", 3),
        ("    executor:\n      kind: dask\n      retries: many\n", "executor.retries must be int", 3),
    ],
)
def test_malformed_executor_is_a_load_error_with_its_line(executor_yaml, message, line):
    with pytest.raises(SpecError) as info:
        sb.Pipeline.from_yaml(_doc(executor_yaml))
    err = info.value
    assert message in err.message
    assert err.line == line and err.path == "pipelines.p.executor"


def test_bare_steps_document_names_top_level_executor():
    with pytest.raises(SpecError) as info:
        sb.Pipeline.from_yaml("executor: nope\nsteps:\n  - use: workflow_orchestration.passthrough\n")
    assert info.value.line == 1 and info.value.path == "executor"


def test_missing_dask_extra_says_how_to_install(monkeypatch):
    real = executor_factory.importlib.util.find_spec
    monkeypatch.setattr(
        executor_factory.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("dask", "distributed") else real(name, *a),
    )
    monkeypatch.setattr(executor_factory, "_SHARED", {})
    with pytest.raises(SibylError, match=r"pip install sibyl_nb\[dask\]"):
        make_executor("dask")


def test_import_and_load_never_import_dask():
    code = (
        "import sys, sibyl_nb as sb\n"
        "p = sb.Pipeline.from_yaml('executor: dask\\nsteps:\\n  - use: workflow_orchestration.passthrough\\n')\n"
        "bad = [m for m in ('dask', 'distributed', 'cloudpickle') if m in sys.modules]\n"
        "print(','.join(bad) or 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "clean", out.stdout + out.stderr


def test_unreachable_scheduler_fails_the_node_with_the_address():
    pytest.importorskip("distributed")
    from sibyl_nb.engine.dask_executor import DaskExecutor
    from sibyl_nb.errors import NodeExecutionError

    pipe = sb.Pipeline.from_yaml("steps:\n  - use: workflow_orchestration.passthrough\n    id: a\n")
    with pytest.raises(NodeExecutionError) as info:
        pipe.run({}, executor=DaskExecutor(scheduler_address="tcp://127.0.0.1:9", connect_timeout=0.5))
    assert "cannot connect to the Dask scheduler at tcp://127.0.0.1:9" in info.value.message
    assert info.value.node_id == "a"
