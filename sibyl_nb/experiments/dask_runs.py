"""``executor: dask`` for sweeps: each *run* of a sweep is one Dask task, so runs spread over the cluster.

Why whole runs and not technique calls: a sweep is embarrassingly parallel across cells, and one
task per run costs one round trip instead of one per node. The task carries plain data — the
setting's document, its line map, the input, the cell's key — plus the functions of techniques the
workers cannot import (shipped by value, exactly as the Dask executor ships them); the worker
compiles the document, runs it on its own local scheduler and returns the JSON record. Metrics and
storage stay in the caller: a judge metric calls the caller's providers, and cells are stored as
they come back, so a sweep killed midway still continues where it stopped.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DaskSweep", "CellTask", "run_cell_task"]


@dataclass
class CellTask:
    """One cell, as data a worker can run."""

    data: Any
    lines: Any
    pipeline: str
    trusted: bool
    input: Any
    key: str
    run_id: str
    cache_path: str | None
    cache_template: str
    keep_outputs: bool
    techniques: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> blob, digest, options


def _techniques_to_ship(pipeline: Any, token: str) -> dict[str, dict[str, Any]]:
    from ..engine.dask_executor import ship_function
    from ..techniques.registry import get_technique

    out: dict[str, dict[str, Any]] = {}
    for node in pipeline.spec.graph.nodes.values():
        for n in [node, *node.fallbacks]:
            if n.kind != "task" or n.technique in out:
                continue
            info = get_technique(n.technique)
            module = getattr(info.fn, "__module__", "") or ""
            if module == "sibyl_nb" or module.startswith("sibyl_nb."):
                continue  # every worker has the package's built-ins
            blob, digest, note = ship_function(info.fn, token)
            out[n.technique] = {
                "blob": blob,
                "digest": digest,
                "note": note,
                "blocking": info.blocking,
                "subtechniques": info.subtechniques,
                "config_schema": info.config_schema,
                "outputs": info.outputs,
            }
    return out


def run_cell_task(task: CellTask) -> dict[str, Any]:
    """Worker side: register shipped techniques, compile the document, run the cell locally."""
    import pickle

    from ..document.compile import compile_document
    from ..pipeline import Pipeline
    from ..techniques.registry import register_technique
    from .cell import run_cell

    for name, t in task.techniques.items():
        if t["blob"] is not None:
            fn = pickle.loads(t["blob"])  # bytes the caller produced for this task: wire data, never stored
            register_technique(
                name,
                fn,
                blocking=t["blocking"],
                subtechniques=t["subtechniques"],
                config_schema=t["config_schema"],
                outputs=t["outputs"],
            )
    doc = compile_document(task.data, task.lines, trusted=task.trusted, default_name=task.pipeline)
    pipe = Pipeline.from_document(doc, task.pipeline, trusted=task.trusted)
    store = None
    if task.cache_path is not None:
        from ..stores.factory import shared_store

        store = shared_store("diskcache", path=task.cache_path)
    record = asyncio.run(
        run_cell(
            pipe,
            task.input,
            key=task.key,
            run_id=task.run_id,
            cache_store=store,
            cache_template=task.cache_template,
            keep_outputs=task.keep_outputs,
            executor="local",  # the run itself stays on this worker (its YAML may say executor: dask)
        )
    )
    try:
        from distributed import get_worker

        record["worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    return record


class DaskSweep:
    """Submits a sweep's cells to a Dask cluster, at most ``max_concurrent`` in flight."""

    def __init__(self, executor: Any) -> None:
        self.executor = executor

    @classmethod
    def from_choice(cls, choice: Any) -> DaskSweep:
        from ..engine.executor_factory import make_executor

        executor = make_executor(choice)
        if not hasattr(executor, "client"):
            from ..errors import ExecutorError

            raise ExecutorError(
                f"sweep executor {choice!r} is not a Dask executor (use 'dask' or a distributed.Client)"
            )
        return cls(executor)

    async def run(self, sweep: Any, todo: list[Any], limit: int, finished: Any) -> None:
        from .cell import failed_record

        client = await asyncio.to_thread(lambda: self.executor.client)
        token = uuid.uuid4().hex
        shipped: dict[int, dict[str, dict[str, Any]]] = {}
        cache_path = str(sweep.store.path / "steps") if sweep.store.path is not None else None
        queue = iter(todo)

        async def submit(task: CellTask) -> dict[str, Any]:
            future = client.submit(
                run_cell_task, task, key=f"sweep-{task.key[:16]}-{token[:8]}", pure=False,
                **getattr(self.executor, "submit_options", {}),
            )  # fmt: skip
            return await future

        async def worker() -> None:
            for cell in queue:
                pipe = cell.setting.pipeline
                if cell.setting.index not in shipped:
                    shipped[cell.setting.index] = _techniques_to_ship(pipe, token)
                task = CellTask(
                    data=pipe.document.data,
                    lines=pipe.document.lines,
                    pipeline=pipe.name,
                    trusted=pipe.trusted,
                    input=cell.input,
                    key=cell.key,
                    run_id=cell.key[:12],
                    cache_path=cache_path,
                    cache_template=sweep.cache_template(cell),
                    keep_outputs=sweep.keep_outputs,
                    techniques=shipped[cell.setting.index],
                )
                loop = client.loop.asyncio_loop
                try:
                    if loop is asyncio.get_running_loop():
                        record = await submit(task)
                    else:
                        record = await asyncio.wrap_future(
                            asyncio.run_coroutine_threadsafe(submit(task), loop)
                        )
                except Exception as exc:  # the task itself failed (a lost worker after retries...)
                    record = failed_record(cell.key, task.run_id, exc)
                record["manifest"] = sweep.run_manifest(cell)
                values = await sweep._score(cell, record)
                sweep.store.put_cell(record, values)
                finished(record)

        await asyncio.gather(*(worker() for _ in range(min(limit, len(todo)))))
