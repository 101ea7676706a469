"""``Pipeline``: load a document, run it (``await execute`` or sync ``run``), observe it."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any

from .document.compile import Document, PipelineSpec, compile_document
from .document.yaml_lines import LineMap, load_yaml_with_lines, read_yaml_file
from .engine.events import Event, EventBus, EventKind
from .engine.executor_factory import check_executor_spec, resolve_executor
from .engine.interrupt import InterruptInfo, interrupt_of, paused_snapshot
from .engine.result import RunResult, StepRecord
from .engine.scheduler import Scheduler
from .engine.stream import StreamingMixin, wants_tokens
from .engine.sync import in_task, run_sync
from .errors import SibylError, SpecError, TemplateError
from .state.api import PipelineStateMixin, settings_extension
from .techniques.registry import get_technique, has_technique, registry_version

if TYPE_CHECKING:  # pragma: no cover
    import random

    from .engine.run import RunLike

__all__ = ["Pipeline", "RunState", "load_document", "RUN_EXTENSIONS"]

# Callables (pipeline, run) -> (observers, hooks) that add checkpointing, caching, logging, metrics...
# from the document's settings. Registered by the modules that implement them.
RUN_EXTENSIONS: list[Callable[[Pipeline, RunState], tuple[list[Any], list[Any]]]] = [settings_extension]


_ID_BATCH = 128
_ids: Iterator[str] = iter(())


def new_run_id() -> str:
    """12 random hex digits (as ``uuid4().hex[:12]``), read from the OS in batches: one ``urandom``
    call per id was a twentieth of a 1-step run. ``next`` on a list iterator is atomic, so threads
    never share an id; a forked child starts a batch of its own."""
    global _ids
    try:
        return next(_ids)
    except StopIteration:
        block = os.urandom(6 * _ID_BATCH).hex()
        batch = [block[i : i + 12] for i in range(0, len(block), 12)]
        _ids = iter(batch[1:])
        return batch[0]


def _forget_ids() -> None:
    global _ids
    _ids = iter(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_ids)


class RunState:
    """Everything one run shares between its nodes (what ``ctx`` reads)."""

    __slots__ = (
        "run_id",
        "workflow_id",
        "input",
        "results",
        "records",
        "state",
        "session",
        "providers",
        "deferred",
        "bus",
        "t0",
        "started_at",
        "_rng",
        "retries",
        "passthrough",
        "last_completed",
        "aliases",
        "trusted",
        "pipeline",
        "scheduler",
        "allocations",
        "extras",
    )

    def __init__(
        self,
        pipeline: Pipeline,
        input: Any,
        *,
        run_id: str | None = None,
        workflow_id: str | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.workflow_id = workflow_id or self.run_id
        self.input = {} if input is None else input
        self.results: dict[str, Any] = {}
        self.records: list[StepRecord] = []
        self.state: dict[str, Any] = {}
        self.session: dict[str, Any] = {}
        self.providers = pipeline._providers()
        self.deferred: list[Callable[[Any], Any]] = []
        self.bus = bus if bus is not None else EventBus()  # an empty bus is falsy: keep the caller's
        self.t0 = time.perf_counter()
        self.started_at = time.time()
        self._rng: random.Random | None = None
        self.retries = 0
        self.passthrough: dict[str, tuple[str, ...]] = {}
        self.last_completed: str | None = None
        self.aliases = pipeline.spec.aliases
        self.trusted = pipeline.trusted
        self.pipeline = pipeline
        self.scheduler: Scheduler | None = None
        self.allocations: list[dict[str, Any]] = []
        self.extras: dict[str, Any] = {}

    @property
    def rng(self) -> random.Random:
        """Seeded by the run id (retry jitter reproducible per run); made on first use, most runs never ask."""
        if self._rng is None:
            import random

            self._rng = random.Random(self.run_id)
        return self._rng

    def render(self, text: Any, ctx: Any) -> Any:
        from .engine.scope import render_runtime

        return render_runtime(text, self, ctx)

    def emit_custom(self, kind: str, node_id: str, iteration: int, data: dict[str, Any]) -> None:
        if kind == "token_allocation":
            self.allocations.append({"node_id": node_id, "iteration": iteration, **data})
        if self.bus:
            self.bus.emit(
                Event(EventKind.CUSTOM, self.run_id, node_id, iteration, time.time(), {"kind": kind, **data})
            )


if TYPE_CHECKING:  # pragma: no cover

    def _is_run_like(run: RunState) -> RunLike:
        """Never called: mypy proves here that a RunState is the run the engine takes (``RunLike``)."""
        return run


class Pipeline(PipelineStateMixin, StreamingMixin):
    """A compiled pipeline plus the document settings it runs with.

    Build with :meth:`from_yaml` / :meth:`from_dict`; run with ``await pipe.execute(inputs)`` or
    ``pipe.run(inputs)`` (also inside a running loop, e.g. a Jupyter cell).
    """

    def __init__(
        self, spec: PipelineSpec, document: Document | None = None, *, trusted: bool = False
    ) -> None:
        self.spec = spec
        self.document = document or Document(pipelines={spec.name: spec})
        self.trusted = trusted or spec.trusted
        self.bus = EventBus()
        # shape, and trust for a scheduler address; dask is imported only when a run needs it
        check_executor_spec(spec, trusted=self.trusted)
        self.executor: Any = None
        self.hooks: list[Any] = []
        self._provider_cache: dict[str, Any] | None = None
        self._sync_code: tuple[int, bool] = (-1, False)  # (registry version, _runs_sync_code)
        self.last_result: RunResult | None = None
        # workflow id -> restore dict of runs paused by ctx.interrupt (resume works without a checkpoint store)
        self._paused: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_yaml(
        cls, path_or_text: str | os.PathLike[str], name: str | None = None, *, trust_code: bool = False
    ) -> Pipeline:
        """Load from a file path or YAML text; ``name`` picks one of several ``pipelines:``."""
        document = load_document(path_or_text, trust_code=trust_code)
        return cls.from_document(document, name, trusted=trust_code)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any] | list[Any], name: str | None = None, *, trust_code: bool = False
    ) -> Pipeline:
        document = compile_document(
            data, LineMap(source="<dict>"), trusted=trust_code, default_name=name or "pipeline"
        )
        return cls.from_document(document, name, trusted=trust_code)

    @classmethod
    def from_document(cls, document: Document, name: str | None = None, *, trusted: bool = False) -> Pipeline:
        names = list(document.pipelines)
        if not names:
            raise SpecError("the document defines no pipeline", source=document.source)
        if name is None:
            if len(names) > 1:
                raise SpecError(
                    f"the document defines {len(names)} pipelines ({', '.join(names)}): pass name=",
                    source=document.source,
                )
            name = names[0]
        if name not in document.pipelines:
            if len(names) == 1 and names[0] == "pipeline":
                spec = document.pipelines["pipeline"]
                spec.name = name
                return cls(spec, document, trusted=trusted)
            from .document.schema import did_you_mean

            raise SpecError(
                f"no pipeline named '{name}'{did_you_mean(name, names)} (defined: {', '.join(names)})",
                source=document.source,
            )
        return cls(document.pipelines[name], document, trusted=trusted)

    # ------------------------------------------------------------------ introspection
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def graph(self) -> Any:
        return self.spec.graph

    @property
    def warnings(self) -> list[str]:
        return list(self.spec.warnings)

    @property
    def required_inputs(self) -> list[str]:
        return sorted(self.spec.required_inputs)

    def subscribe(self, fn: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``fn(event)`` for every event of every run of this pipeline; returns an unsubscribe."""
        return self.bus.subscribe(fn)

    def _providers(self) -> dict[str, Any]:
        if self._provider_cache is None:
            if not self.document.providers:
                self._provider_cache = {}
                return self._provider_cache
            from .providers.registry import make_provider

            self._provider_cache = {n: make_provider(n, c) for n, c in self.document.providers.items()}
        return self._provider_cache

    # ------------------------------------------------------------------ running
    async def execute(
        self,
        inputs: Any = None,
        *,
        workflow_id: str | None = None,
        session_id: str | None = None,
        observers: Iterable[Callable[[Event], Any]] = (),
        hooks: Iterable[Any] = (),
        restore: dict[str, Any] | None = None,
        run_id: str | None = None,
        executor: Any = None,
    ) -> RunResult:
        """Run once and return a :class:`RunResult`; a failure raises ``NodeExecutionError`` (with ``.result``).
        ``executor``: for this run only (an executor, a ``distributed.Client``, or an ``executor:`` value)."""
        if session_id is not None:
            inputs = (
                {**(inputs or {}), "session_id": session_id}
                if isinstance(inputs, dict) or inputs is None
                else {"query": inputs, "session_id": session_id}
            )
        if self.spec.required_inputs:
            self._check_inputs(inputs)
        bus = EventBus()
        for fn in (*self.bus._subscribers, *observers):
            bus.subscribe(fn)
        run = RunState(self, inputs, run_id=run_id, workflow_id=workflow_id, bus=bus)
        run.extras["tokens"] = wants_tokens(bus._subscribers) if bus else False
        all_hooks = [*self.hooks, *hooks]
        for extend in RUN_EXTENSIONS:
            extra_observers, extra_hooks = extend(self, run)
            for fn in extra_observers:
                bus.subscribe(fn)
            all_hooks.extend(extra_hooks)
        if restore is not None:
            self._apply_restore(run, restore)
        scheduler = Scheduler(
            self.spec.graph,
            run,
            executor=resolve_executor(executor, self),
            hooks=tuple(all_hooks),
            restore=restore.get("scheduler") if restore else None,
            pruned=self.spec.pruned,
        )
        run.scheduler = scheduler
        if bus:
            bus.emit(
                Event(
                    EventKind.RUN_STARTED,
                    run.run_id,
                    None,
                    1,
                    time.time(),
                    {
                        "pipeline": self.name,
                        "input": run.input,
                        "workflow_id": run.workflow_id,
                        "nodes": list(self.spec.graph.nodes),
                        "resumed": restore is not None,
                    },
                )
            )
        try:
            await scheduler.execute()
        except BaseException as exc:
            if bus:
                bus.emit(
                    Event(
                        EventKind.RUN_FAILED,
                        run.run_id,
                        None,
                        1,
                        time.time(),
                        {"error": f"{type(exc).__name__}: {exc}", "node_id": None},
                    )
                )
            raise
        error = scheduler.failure_error()
        result = self._result(run, scheduler, error)
        self.last_result = result
        if error is not None:
            error.result = result
            if bus:
                bus.emit(
                    Event(
                        EventKind.RUN_FAILED,
                        run.run_id,
                        error.node_id,
                        error.iteration,
                        time.time(),
                        {"error": error.one_line(), "node_id": error.node_id, "result": result},
                    )
                )
            raise error
        if result.stopped_by == "interrupted":
            self._paused[run.workflow_id] = paused_snapshot(run, scheduler)
        else:
            self._paused.pop(run.workflow_id, None)
        for fn in run.deferred:
            out = fn(result)
            if inspect.isawaitable(out):
                await in_task()
                await out
        if bus:
            bus.emit(
                Event(
                    EventKind.RUN_FINISHED,
                    run.run_id,
                    None,
                    1,
                    time.time(),
                    {
                        "stopped_by": result.stopped_by,
                        "duration": result.duration,
                        "output": result.output,
                        "result": result,
                    },
                )
            )
        run.scheduler = None  # run <-> scheduler is a cycle: broken, the run is freed now, not by gc
        return result

    def run(self, inputs: Any = None, *, loop: str = "thread", **kwargs: Any) -> RunResult:
        """Synchronous :meth:`execute`. Inside a running event loop (a Jupyter cell) the engine runs on a
        private loop in a helper thread (``loop="thread"``), or re-enters the caller's loop with
        nest_asyncio (``loop="caller"``: for techniques holding objects bound to that loop)."""
        taskless = kwargs.get("executor") is None and self._runs_sync_code()
        return run_sync(self.execute(inputs, **kwargs), loop=loop, taskless=taskless)

    def _runs_sync_code(self) -> bool:
        """Whether every node calls a sync technique on the local executor: then a sync run starts
        without an asyncio task (``run_sync(taskless=True)``, a few microseconds saved per run). Only
        a speed choice: the engine hands a run to a task before any code that may need one."""
        if self.executor is not None or self.spec.executor is not None:
            return False
        version = registry_version()
        if self._sync_code[0] != version:
            self._sync_code = (version, all(_sync_node(n) for n in self.spec.graph.nodes.values()))
        return self._sync_code[1]

    def _check_inputs(self, inputs: Any) -> None:
        missing = []
        for name, wheres in self.spec.required_inputs.items():
            if isinstance(inputs, dict) and name in inputs:
                continue
            missing.append(f"'{name}' (used at {wheres[0]})")
        if missing:
            given = ", ".join(sorted(inputs)) if isinstance(inputs, dict) else type(inputs).__name__
            raise TemplateError(
                f"pipeline '{self.name}' needs input field(s) {', '.join(missing)}; "
                f"the input has: {given or 'nothing'}"
            )

    def _apply_restore(self, run: RunState, restore: dict[str, Any]) -> None:
        run.results.update(restore.get("results", {}))
        run.state.update(restore.get("state", {}))
        run.session.update(restore.get("session", {}))
        run.records.extend(StepRecord.from_dict(r) for r in restore.get("records", []))
        run.passthrough.update({k: tuple(v) for k, v in restore.get("passthrough", {}).items()})
        run.retries = restore.get("retries", 0)
        run.last_completed = restore.get("last_completed", run.last_completed)
        run.allocations.extend(restore.get("allocations", []))
        if restore.get("answers"):  # resume(value=): what each waiting node's ctx.interrupt returns
            run.extras["answers"] = restore["answers"]

    def _result(self, run: RunState, scheduler: Scheduler, error: SibylError | None) -> RunResult:
        output = scheduler.output()  # the one rule for what a graph returns (see Scheduler.output)
        return RunResult(
            run_id=run.run_id,
            workflow_id=run.workflow_id,
            pipeline=self.name,
            output=output,
            outputs=dict(run.results),
            records=run.records,
            stopped_by="failed" if error else scheduler.stopped_by,
            started_at=run.started_at,
            duration=time.perf_counter() - run.t0,
            input=run.input,
            session=run.session,
            state=run.state,
            error=error.one_line() if error else None,
            graph=self.spec.graph,
            allocations=run.allocations,
            exits=list(self.spec.graph.exits),
            warnings=list(scheduler.warnings),
            interrupts=[
                InterruptInfo(i.node_id, i.payload, i.iteration, run.workflow_id, i.answers)
                for i in interrupt_of(run.records)
            ]
            if scheduler.stopped_by == "interrupted" and not error
            else [],
        )

    # ------------------------------------------------------------------ display
    def __repr__(self) -> str:
        g = self.spec.graph
        return f"<Pipeline {self.name!r}: {len(g.nodes)} nodes, {len(g.edges)} edges>"


def _sync_node(node: Any) -> bool:
    if node.kind == "entry":
        return True
    if node.kind != "task" or node.timeout is not None or not has_technique(node.technique):
        return False
    return not get_technique(node.technique).is_async and all(_sync_node(fb) for fb in node.fallbacks)


def load_document(path_or_text: str | os.PathLike[str], *, trust_code: bool = False) -> Document:
    """Parse and validate a whole document (file path or YAML text)."""
    text, source = _read(path_or_text)
    data, lines = load_yaml_with_lines(text, source)
    if data is None:
        raise SpecError("the document is empty", source=source)
    return compile_document(data, lines, trusted=trust_code)


def _read(path_or_text: str | os.PathLike[str]) -> tuple[str, str]:
    if isinstance(path_or_text, os.PathLike):
        p = FsPath(path_or_text)
        return read_yaml_file(p), str(p)
    text = str(path_or_text)
    if "\n" not in text and len(text) < 4096 and text.endswith((".yaml", ".yml")):
        p = FsPath(text)
        if not p.exists():
            raise SpecError(f"no such file: {text}")
        return read_yaml_file(p), str(p)
    return text, "<yaml>"
