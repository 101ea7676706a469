"""``sweep`` / ``asweep``: run a pipeline over inputs x grid settings x repeats, score, store, tabulate.

How "re-run for free" works, in two layers:

- **Cells.** A cell's key is a hash of its setting's pipeline definition, the providers, the
  techniques' code, the input, the repeat and the seed. A stored cell with the same key is not run
  again; its stored metric values are reused (a metric is keyed by its name and parameters or code),
  so a re-run with nothing changed calls no technique, provider or judge.
- **Steps.** A cell that must run (a new grid value, an edited node) runs with the step cache of
  ``sibyl_nb.state.cache`` in the sweep's folder: nodes whose technique, rendered config, input and
  upstream outputs are unchanged are served from it, so only the changed node and what follows it
  really run. (``workflow_orchestration.*`` steps — sessions, context, state — are never cached: they
  run again, as they would in any cached run.)

Cells are appended to the store as they finish, so a killed sweep continues where it stopped.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .cell import result_from_record, run_cell
from .frame import METRIC_ERROR, Cell, build_frame, cell_key, env_key
from .grid import Setting, expand_grid
from .manifest import build_manifest, provider_table, technique_table
from .metrics import Metric, as_metric
from .rows import IN_MEMORY
from .store import MemorySweepStore, SweepStore, check_name, sweep_dir

__all__ = ["sweep", "asweep", "SweepRun", "load_sweep"]


def _as_pipeline(pipeline: Any, name: str | None) -> Any:
    from ..pipeline import Pipeline

    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, (str, os.PathLike)):
        return Pipeline.from_yaml(pipeline, name=name)
    if isinstance(pipeline, (dict, list)):
        return Pipeline.from_dict(pipeline, name=name)
    raise ConfigError(
        f"sweep(): pipeline must be a Pipeline, YAML text/path or a dict, got {type(pipeline).__name__}"
    )


def _as_inputs(inputs: Any) -> list[Any]:
    if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Iterable):
        raise ConfigError("sweep(): inputs must be a list of inputs (dicts, or strings taken as the query)")
    out = [{"query": x} if isinstance(x, str) else x for x in inputs]
    if not out:
        raise ConfigError("sweep(): inputs is empty")
    return out


def _check_metrics(metrics: Sequence[Any]) -> list[Metric]:
    out = [as_metric(m) for m in metrics]
    names = [m.name for m in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"sweep(): two metrics are called {', '.join(dupes)}: give one a name=")
    return out


def _in_kernel() -> bool:
    import sys

    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class SweepRun:
    """One call of ``sweep``: the cells, the store, the work still to do, and the frame at the end."""

    def __init__(
        self,
        pipeline: Any,
        inputs: Any,
        grid: Mapping[str, Sequence[Any]] | None = None,
        metrics: Sequence[Any] = (),
        *,
        repeats: int = 1,
        fields: Sequence[str] = (),
        name: str | None = None,
        seed: int = 0,
        store: bool = True,
        directory: str | os.PathLike[str] | None = None,
        keep_outputs: bool = True,
        retry_failed: bool = False,
    ) -> None:
        self.pipeline = _as_pipeline(pipeline, None)
        self.inputs = _as_inputs(inputs)
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            raise ConfigError(f"sweep(): repeats must be a positive integer, got {repeats!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"sweep(): seed must be an integer, got {seed!r}")
        self.grid = dict(grid or {})
        self.settings: list[Setting] = expand_grid(self.pipeline, self.grid)
        self.metrics = _check_metrics(metrics)
        self.fields = [str(f) for f in fields]
        self.repeats = repeats
        self.seed = seed
        self.keep_outputs = keep_outputs
        self.retry_failed = retry_failed
        self.name = check_name(name or self.pipeline.name)
        self.store: MemorySweepStore = (
            SweepStore(sweep_dir(self.name, directory)) if store else MemorySweepStore()
        )
        self.store.load()
        self.providers = provider_table(self.pipeline)
        self.techniques = technique_table(self.pipeline)
        env = env_key(self.providers, self.techniques)
        self.cells = [
            Cell(i, inp, s, r, cell_key(env, s.hash, inp, r, seed))
            for i, inp in enumerate(self.inputs)
            for s in self.settings
            for r in range(repeats)
        ]
        self._env = env
        self.manifest = build_manifest(
            name=self.name,
            pipeline=self.pipeline,
            settings=self.settings,
            grid=self.grid,
            inputs=self.inputs,
            metrics=self.metrics,
            fields=self.fields,
            repeats=repeats,
            seed=seed,
            providers=self.providers,
            techniques=self.techniques,
        )
        self.ran = 0
        self.reused = 0
        self._replays: list[Any] = []
        self._providers_by_repeat: dict[int, dict[str, Any]] = {}
        self._pipes: dict[tuple[int, int], Any] = {}
        self._record_provider_calls()

    def _record_provider_calls(self) -> None:
        """Runs get providers wrapped in :class:`~sibyl_nb.providers.replay.ReplayProvider` (``auto``,
        recorded in the sweep's folder, one recording per repeat so repeats stay independent samples):
        a cell that runs again — a step that is never cached (``cache: false``, sessions, context) or
        one whose upstream changed but whose prompt did not — gets the same answer without calling the
        model. The user's pipeline object and provider registry are untouched: runs use copies.

        The deterministic local provider is not recorded: its answer is computed, the same every
        time, and recording it cost more than computing it again (a stored sweep of the research
        workflow spent a third of its time in the recordings)."""
        if self.store.path is None:
            return
        from ..providers.local import LocalProvider
        from ..providers.registry import get_provider
        from ..providers.replay import ReplayProvider

        own = self.pipeline._providers()
        for repeat in range(self.repeats):
            wrapped = dict(own)
            for name, entry in self.providers.items():
                if "error" in entry:
                    continue
                provider = own.get(name) or get_provider(name)
                if isinstance(provider, ReplayProvider) or type(provider) is LocalProvider:  # see above
                    continue
                wrapped[name] = ReplayProvider(
                    provider, "auto", self.store.path / "replay" / f"r{repeat}", name=name
                )
                self._replays.append(wrapped[name])
            self._providers_by_repeat[repeat] = wrapped

    def pipeline_for(self, cell: Cell) -> Any:
        """The pipeline a cell runs: its setting's, with this repeat's recorded providers."""
        wrapped = self._providers_by_repeat.get(cell.repeat)
        pipe = cell.setting.pipeline
        if wrapped is None:
            return pipe
        key = (cell.setting.index, cell.repeat)
        copy_ = self._pipes.get(key)
        if copy_ is None:
            import copy

            copy_ = self._pipes[key] = copy.copy(pipe)
            copy_._provider_cache = wrapped
        return copy_

    def todo(self) -> list[Cell]:
        cells = self.store.cells
        return [
            c
            for c in self.cells
            if c.key not in cells or (self.retry_failed and cells[c.key].get("status") == "failed")
        ]

    # ------------------------------------------------------------------ running
    async def _score(self, cell: Cell, record: dict[str, Any]) -> dict[str, Any]:
        """Values of the metrics this cell has no stored value for."""
        have = self.store.metrics.get(cell.key, {})
        missing = [m for m in self.metrics if m.key not in have]
        if not missing:
            return {}
        if record.get("status") == "failed":
            return {m.key: None for m in missing}
        result = result_from_record(record, pipeline=self.pipeline.name, input=cell.input)
        out: dict[str, Any] = {}
        for m in missing:
            try:
                value = m(record.get("output"), cell.input, result)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:  # a broken metric marks its cells, the sweep goes on
                value = {METRIC_ERROR: f"{type(exc).__name__}: {exc}"}
            out[m.key] = _metric_value(value)
        return out

    def cache_template(self, cell: Cell) -> str:
        """Step-cache keys: per sweep, environment and repeat (repeats never share a step's output)."""
        return f"sweep:{self.name}:{self._env}:r{cell.repeat}:${{step_name}}"

    async def _one(self, cell: Cell, cache_store: Any, executor: Any) -> dict[str, Any]:
        record = await run_cell(
            self.pipeline_for(cell),
            cell.input,
            key=cell.key,
            run_id=cell.key[:12],
            cache_store=cache_store,
            cache_template=self.cache_template(cell),
            keep_outputs=self.keep_outputs,
            executor=executor,
        )
        record["manifest"] = self.run_manifest(cell)
        values = await self._score(cell, record)
        self.store.put_cell(record, values)
        return record

    def run_manifest(self, cell: Cell) -> dict[str, Any]:
        """What this one run ran with, stored in its record: the sweep manifest's entries that made its key."""
        return {
            "sweep": self.name,
            "setting": cell.setting.index,
            "setting_hash": cell.setting.hash,
            "params": cell.setting.params,
            "environment": self._env,  # providers and technique code (in the sweep manifest)
            "input_id": cell.input_id,
            "repeat": cell.repeat,
            "seed": self.seed,
            "run_id": cell.key[:12],  # also the seed of the run's own random generator (retry jitter)
        }

    async def execute(
        self,
        *,
        max_concurrent: int = 8,
        progress: bool = True,
        live: bool | None = None,
        executor: Any = None,
        on_row: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Any:
        if not isinstance(max_concurrent, int) or isinstance(max_concurrent, bool) or max_concurrent < 1:
            raise ConfigError(f"sweep(): max_concurrent must be a positive integer, got {max_concurrent!r}")
        self.store.write_manifest(self.manifest)
        todo = self.todo()
        done_before = len(self.cells) - len(todo)
        self.reused = done_before
        pending = {c.key for c in todo}
        for cell in self.cells:  # stored cells: score only metrics added since
            rec = self.store.cells.get(cell.key)
            if rec is not None and cell.key not in pending:
                values = await self._score(cell, rec)
                if values:
                    self.store.put_metrics(cell.key, values)
        view = None
        if live if live is not None else _in_kernel():
            from .live import LiveTable

            view = LiveTable(self, progress=progress)  # its header carries tqdm's meter: one display
        bar = _progress(len(self.cells), done_before, self.name) if progress and view is None else None
        dask = _dask_runner(executor, self.pipeline)
        try:
            if dask is not None:
                await dask.run(self, todo, max_concurrent, lambda rec: self._finished(rec, bar, view, on_row))
            else:
                # a stored sweep caches every step (a later change re-runs only what it affects); one that
                # keeps nothing caches only when its settings share nodes (else it would only cost time)
                keep = self.store.path is not None or bool(self.shared_nodes())
                cache_store = self.store.step_cache() if keep else None
                await self._local(todo, max_concurrent, cache_store, executor, bar, view, on_row)
        finally:
            if bar is not None:
                bar.close()
            self.store.close()
            for replay in self._replays:
                replay.close()
        frame = self.frame()
        if view is not None:
            view.finish(frame)
        return frame

    def _finished(self, record: dict[str, Any], bar: Any, view: Any, on_row: Any) -> None:
        self.ran += 1
        if bar is not None:
            bar.update(1)
            if record.get("status") == "failed":
                bar.set_postfix_str("failures: yes", refresh=False)
        if view is not None:
            view.update()
        if on_row is not None:
            on_row(record)

    def shared_nodes(self) -> frozenset[str]:
        """Nodes no grid key can change (upstream of every grid key): the same for every setting of an
        input, so a sweep computes them once per (input, repeat) and the other settings read them from
        the step cache."""
        if len(self.settings) < 2:
            return frozenset()
        graph = self.pipeline.spec.graph
        todo = [k.split(".config.")[0] for k in self.grid]
        affected: set[str] = set()
        while todo:
            nid = todo.pop()
            if nid in affected or nid not in graph.nodes:
                continue
            affected.add(nid)
            todo.extend(e.dst for e in graph.nodes[nid].out_edges if not e.back)
        cacheable = {n.id for n in graph.nodes.values() if n.kind == "task" and n.cache is not False}
        return frozenset(cacheable - affected)

    def plan(self, todo: list[Cell]) -> tuple[list[Cell], dict[str, list[Cell]]]:
        """(cells to start with, followers by leader key). When settings share nodes, the first cell of
        each (input, repeat) leads and the others start when it has finished, so the shared nodes run
        once instead of once per concurrent setting; otherwise every cell can start at once."""
        if not todo or not self.shared_nodes():
            return todo, {}
        groups: dict[tuple[int, int], list[Cell]] = {}
        for cell in todo:
            groups.setdefault((cell.input_id, cell.repeat), []).append(cell)
        leaders = [g[0] for g in groups.values()]
        return leaders, {g[0].key: g[1:] for g in groups.values() if len(g) > 1}

    async def _local(self, todo: list[Cell], limit: int, cache_store: Any, executor: Any, bar: Any, view: Any,
                     on_row: Any) -> None:  # fmt: skip
        if not todo:
            return
        start, followers = self.plan(todo) if cache_store is not None else (todo, {})
        queue: asyncio.Queue[Cell | None] = asyncio.Queue()
        for cell in start:
            queue.put_nowait(cell)
        n_workers = min(limit, len(todo))
        remaining = len(todo)

        def stop() -> None:
            for _ in range(n_workers):
                queue.put_nowait(None)

        async def worker() -> None:
            nonlocal remaining
            while (cell := await queue.get()) is not None:  # at most ``limit`` runs at a time
                try:
                    record = await self._one(cell, cache_store, executor)
                    for follower in followers.pop(cell.key, ()):
                        queue.put_nowait(follower)
                    self._finished(record, bar, view, on_row)
                except BaseException:
                    stop()  # a store that cannot be written, an on_row that raised: end the others too
                    raise
                remaining -= 1
                if remaining == 0:
                    stop()

        await asyncio.gather(*(worker() for _ in range(n_workers)))

    def frame(self) -> Any:
        frame = build_frame(self.cells, self.store.cells, self.store.metrics, self.metrics, self.fields)
        frame.attrs["sibyl_sweep"] = {
            "name": self.name,
            "path": str(self.store.path) if self.store.path is not None else None,
            "ran": self.ran,  # runs this call made (0 when everything was stored)
            "reused": self.reused,  # cells served from the store
        }
        if self.store.path is None:
            IN_MEMORY[self.name] = self
        return frame


def _metric_value(value: Any) -> Any:
    import numbers

    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _metric_value(v) for k, v in value.items()}
    raise ConfigError(
        f"a metric returned {type(value).__name__} {value!r}: return a number, a bool or a dict"
    )


def _progress(total: int, initial: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"sweep {name}", unit="run", leave=True)


def _dask_runner(executor: Any, pipeline: Any) -> Any:
    """The Dask dispatcher when the sweep (or the pipeline's ``executor:``) asks for Dask."""
    choice = executor if executor is not None else pipeline.spec.executor
    if choice is None or choice == "local":
        return None
    from .dask_runs import DaskSweep

    return DaskSweep.from_choice(choice)


async def asweep(
    pipeline: Any,
    inputs: Any,
    grid: Mapping[str, Sequence[Any]] | None = None,
    metrics: Sequence[Any] = (),
    *,
    max_concurrent: int = 8,
    repeats: int = 1,
    fields: Sequence[str] = (),
    name: str | None = None,
    seed: int = 0,
    store: bool = True,
    directory: str | os.PathLike[str] | None = None,
    progress: bool = True,
    live: bool | None = None,
    executor: Any = None,
    keep_outputs: bool = True,
    retry_failed: bool = False,
    on_row: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """Run ``pipeline`` on every input under every grid setting (``{"node_id.config.key": [values]}``),
    ``repeats`` times; return a DataFrame with one row per run: the grid parameters, the output (and
    ``fields`` of it), each metric, status and error, latency, tokens in/out, cache hits and per-step
    timings. Results and a reproducibility manifest are stored under ``$SIBYL_HOME/sweeps/<name>``
    (``name`` defaults to the pipeline's; ``store=False`` keeps nothing): re-running computes only
    cells that changed. ``max_concurrent`` runs at a time; ``executor="dask"`` (or a
    ``distributed.Client``) spreads the runs over a Dask cluster."""
    run = SweepRun(
        pipeline, inputs, grid, metrics, repeats=repeats, fields=fields, name=name, seed=seed, store=store,
        directory=directory, keep_outputs=keep_outputs, retry_failed=retry_failed,
    )  # fmt: skip
    return await run.execute(max_concurrent=max_concurrent, progress=progress, live=live, executor=executor,
                             on_row=on_row)  # fmt: skip


def sweep(pipeline: Any, inputs: Any, grid: Mapping[str, Sequence[Any]] | None = None, metrics: Sequence[Any] = (),
          **kwargs: Any) -> Any:  # fmt: skip
    """Synchronous :func:`asweep` (also inside a running loop, e.g. a notebook cell)."""
    from ..engine.sync import run_sync

    return run_sync(asweep(pipeline, inputs, grid, metrics, **kwargs))


sweep.__doc__ = (sweep.__doc__ or "") + "\n\n" + (asweep.__doc__ or "")


def load_sweep(name: str, *, directory: str | os.PathLike[str] | None = None) -> Any:
    """A stored sweep's DataFrame, rebuilt from its folder (works in a new kernel: JSON only).
    Metric columns are the values stored for the metrics the sweep was run with."""
    from .loaded import load

    return load(name, directory)
