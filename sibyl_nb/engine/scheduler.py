"""The one scheduler: runs any :class:`GraphIR` on asyncio with the DESIGN semantics.

Every node activation goes through one lifecycle, in this file's order:

1. **activate** (:meth:`Scheduler._activate`): count the iteration, build ``ctx``;
2. **prepare** (:meth:`Scheduler._prepare`): guard / lazy skip, render the config, look up the
   technique, ask the hooks (step cache). It may settle the node at once (skipped, cached, failed);
3. **run** the attempts: the first one inline when the technique is sync and cheap
   (:meth:`Scheduler._run_inline`), else :meth:`Scheduler._run` (retries with backoff, timeout,
   fallbacks), awaited directly when nothing else can run meanwhile, or as a task;
4. **settle** (:meth:`Scheduler._settle`) the typed :data:`Outcome` (:class:`Done`,
   :class:`Skipped`, :class:`Failed`): record, store the output, emit, resolve out-edges.

Semantics:

- A node is ready when all its forward in-edges are resolved and at least one fired (or it is an
  entry). Ready nodes start at once, up to ``max_concurrent``; there is no superstep barrier.
- Out-edge conditions decide fire/skip; a ``default`` edge fires when no sibling edge fired. A node
  whose in-edges all skipped is skipped and that propagates (dead-path elimination). A node that
  ran, has conditional out-edges and fired none is reported in ``warnings`` (outside loops).
- Loops (see :mod:`.ir`): a fired back edge re-runs the loop body (never what follows the loop)
  until ``max_iterations`` runs of a node, which ends the loop gracefully with
  ``stopped_by="max_iterations"``. A loop's exit edges are resolved once, when the loop has ended:
  what follows a loop runs once. When the cap ended the loop, its exit edges fire whatever their
  conditions say (the cap stands in for the loop's exit test). The *loop value* is the latest output
  fed to the loop's header (by the node before the loop or by a back edge); an exit edge leaving
  from a back edge's source carries it, and so does ``result.output`` when the graph ends in a loop.
- A failure, after retries, runs the node's fallbacks; when they all fail (or there are none),
  running nodes are cancelled and :class:`NodeExecutionError` names node, technique, attempt, the
  original cause and every fallback's failure.
- Sync code sent to a thread cannot be killed: on a timeout or a cancellation its ``ctx.cancelled``
  turns true (a technique may poll it and stop), the node is recorded as failed / cancelled at once,
  and a thread still running when the run ends is named in ``warnings``.

A node's recorded ``started`` is when its code began (inside the thread for offloaded sync code),
and ``node_started`` is emitted at that moment.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..document.expressions import MISSING
from ..errors import NodeExecutionError, SibylError, TechniqueError, TemplateError, short_repr
from ..techniques.context import StepContext
from ..techniques.registry import TechniqueInfo, get_technique
from .events import Event, EventKind
from .executors import LocalExecutor
from .interrupt import INTERRUPTED, Interrupt, record_output
from .ir import Edge, GraphIR, Loop, Node
from .result import StepRecord
from .scope import resolver_for
from .sync import in_task

if TYPE_CHECKING:  # pragma: no cover
    from .run import RunLike

__all__ = [
    "Scheduler",
    "NodeFailure",
    "Activation",
    "Done",
    "Skipped",
    "Failed",
    "Paused",
    "Outcome",
    "TechniqueOutputError",
    "RAN",
    "CACHED",
    "RECOVERED",
]

_perf = time.perf_counter
_POOL_WORKERS = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default ThreadPoolExecutor size

_LOCAL = LocalExecutor()  # stateless: one for every scheduler that was given no executor

RAN = "ran"
CACHED = "cached"
RECOVERED = "recovered"  # a fallback supplied the output


class TechniqueOutputError(TechniqueError):
    """A technique returned something that is not an output (a generator); never retried."""


class NodeFailure(Exception):
    """A node failed for good (after retries and fallbacks)."""

    def __init__(
        self,
        node: Node,
        iteration: int,
        attempts: int,
        cause: BaseException,
        fallback_errors: list[tuple[str, BaseException]] | None = None,
    ) -> None:
        self.node = node
        self.iteration = iteration
        self.attempts = attempts
        self.cause = cause
        self.fallback_errors = fallback_errors or []
        super().__init__(str(cause))


# ---------------------------------------------------------------------- the typed pieces
@dataclass(slots=True, eq=False)
class Activation:
    """One activation of one node: what it was started with, and when its code began."""

    node: Node
    iteration: int
    preds: tuple[str, ...]
    ctx: StepContext
    info: TechniqueInfo | None = None
    started: float = 0.0  # perf_counter when the first attempt's code began (0 = not yet)
    first_error: BaseException | None = None  # the inline first attempt raised this
    awaiting: Any = None  # the inline first attempt returned this awaitable
    cancel: threading.Event | None = None  # set on timeout/cancel: ctx.cancelled reads it
    thread_running: bool = False


@dataclass(slots=True)
class Done:
    """The node has an output: it ran, was served from the cache, or a fallback supplied it."""

    output: Any
    started: float
    ended: float
    attempts: int
    status: str = RAN  # RAN | CACHED | RECOVERED


@dataclass(slots=True)
class Skipped:
    """A guard / lazy skip: ``bypass`` successors still run and see this node's own upstream."""

    reason: str
    bypass: bool = True


@dataclass(slots=True)
class Failed:
    """The node failed for good; ``recorded``: its failed record was already written."""

    failure: NodeFailure
    started: float = 0.0
    ended: float = 0.0
    recorded: bool = False


@dataclass(slots=True)
class Paused:
    """``ctx.interrupt`` with no answer yet: the node waits in the frontier for ``resume(value=)``."""

    interrupt: Interrupt


Outcome = Done | Skipped | Failed | Paused


@dataclass(slots=True)
class _LoopState:
    live: int = 0  # loop nodes ready, blocked or running
    value: str | None = None  # id of the feeder that produced the loop value
    capped: bool = False  # max_iterations refused a back edge
    done: bool = False  # exit edges resolved
    started: bool = False
    exits_fired: list[str] = field(default_factory=list)


class _EdgeScope:
    """The scope an edge condition sees: bare fields read the edge source's output."""

    __slots__ = ("upstream", "iteration")

    def __init__(self, src: str, output: Any, iteration: int) -> None:
        self.upstream = {src: output}
        self.iteration = iteration


# ---------------------------------------------------------------------- the scheduler
class Scheduler:
    """Runs one graph against one run state (``run``: results, records, bus, session...)."""

    __slots__ = (
        "graph",
        "run",
        "executor",
        "_local",
        "hooks",
        "pruned",
        "_nodes",
        "_pending",
        "_need",
        "_fired",
        "_runs",
        "_acts",
        "_last",
        "_out_fired",
        "_loops",
        "_ready",
        "_inflight",
        "_inflight_by",
        "_blocked",
        "_tasks",
        "_done",
        "_wake",
        "_failure",
        "_emit",
        "_deferred_events",
        "_threads",
        "_busy_threads",
        "_paused",
        "warnings",
        "stopped_by",
    )

    def __init__(
        self,
        graph: GraphIR,
        run: RunLike,
        *,
        executor: Any = None,
        hooks: tuple[Any, ...] = (),
        restore: dict[str, Any] | None = None,
        pruned: frozenset[str] = frozenset(),
    ) -> None:
        if not graph.finalized:
            graph.finalize()
        self.graph = graph
        self.run = run
        if executor is None:
            self.executor: Any = _LOCAL
            self._local = True
        else:
            self.executor = executor
            self._local = isinstance(executor, LocalExecutor)
        self.hooks = tuple(h for h in hooks if getattr(h, "before_node", None) is not None) if hooks else ()
        self.pruned = pruned
        n = len(graph.order)
        self._nodes = graph.order  # shared with the graph: read only
        self._pending = list(graph.fwd_in)
        self._need = list(graph.fwd_in)  # what _pending started from in the current activation
        self._fired: list[list[str]] = [[] for _ in range(n)]
        self._runs = [0] * n  # executions that produced an output (for max_iterations)
        self._acts = [0] * n  # activations (ran, bypassed, skipped) = iteration numbers
        self._last: list[str | None] = [None] * n  # latest outcome: ran | bypassed | skipped
        self._out_fired = [False] * n  # did the latest resolution fire a forward edge
        self._loops = [_LoopState() for _ in graph.loops] if graph.loops else []
        self._ready: deque[tuple[Node, tuple[str, ...]]] = deque()
        self._inflight = 0
        self._inflight_by: dict[str, int] = {}
        self._blocked: dict[str | None, deque[tuple[Node, tuple[str, ...]]]] = {}
        self._tasks: dict[asyncio.Task[Any], Activation] = {}
        self._done: deque[tuple[asyncio.Task[Any], Activation]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._failure: NodeFailure | None = None
        self._emit = run.bus.emit if run.bus else None
        self._deferred_events: list[Event] = []
        self._threads: list[Activation] = []  # offloaded calls abandoned by a timeout / cancel
        self._busy_threads = 0  # this scheduler's calls occupying a worker of the default pool
        self._paused: list[tuple[Node, tuple[str, ...]]] = []  # interrupted: the frontier of a resume
        self.warnings: list[str] = []
        self.stopped_by = "completed"
        if restore is not None:
            self._restore(restore)
        else:
            for node in graph.entries:
                self._push(node, ())

    # ------------------------------------------------------------------ main loop
    async def execute(self) -> None:
        ready = self._ready
        limit = self.graph.max_concurrent
        limits = self.graph.limits
        local = self._local
        while True:
            while ready and self._failure is None:
                node, preds = ready.popleft()
                key = node.limit_key
                if key is not None and self._inflight_by.get(key, 0) >= limits.get(key, 1 << 30):
                    self._blocked.setdefault(key, deque()).append((node, preds))
                    continue
                if limit is not None and self._inflight >= limit:
                    self._blocked.setdefault(None, deque()).append((node, preds))
                    continue
                act = self._activate(node, preds)
                outcome = self._prepare(act)
                alone = not ready and self._inflight == 0
                info = act.info
                if (  # sync, cheap (or nothing to overlap with), no timeout, local: call it right here
                    outcome is None
                    and info is not None
                    and local
                    and not info.is_async
                    and node.timeout is None
                    and (not info.blocking or alone)
                ):
                    outcome = self._run_inline(act)
                if outcome is not None:
                    self._settle(act, outcome)
                elif alone:
                    self._settle(act, await self._run(act))
                else:
                    self._spawn(act)
            if self._failure is not None:
                await self._cancel_all()
                return
            if self._inflight == 0:
                if ready:
                    continue
                if self._blocked and self._unblock_all():
                    continue
                if self._loops and self._end_idle_loops():
                    continue
                if self._threads:
                    self._note_threads()
                return
            if not self._done:
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                except asyncio.CancelledError:
                    await self._cancel_all()
                    raise
                finally:
                    self._wake = None
            while self._done:
                task, act = self._done.popleft()
                self._tasks.pop(task, None)
                self._release(act.node)
                if task.cancelled():
                    continue
                self._settle(act, task.result())

    # ------------------------------------------------------------------ 1. activate
    def _activate(self, node: Node, preds: tuple[str, ...]) -> Activation:
        i = node.index
        it = self._acts[i] + 1
        self._acts[i] = it
        return Activation(
            node, it, preds, StepContext(self.run, node.id, node.technique, node.config, preds, it)
        )

    # ------------------------------------------------------------------ 2. prepare
    def _prepare(self, act: Activation) -> Outcome | None:
        """Settle-now outcomes (skip, cache hit, entry, load-time-like errors) or None: run it."""
        node = act.node
        ctx = act.ctx
        if node.kind == "entry":
            now = _perf()
            return Done(self.run.input, now, now, 1)
        if node.guard is not None or node.id in self.pruned:
            try:
                reason = self._skip_reason(node, ctx)
            except SibylError as exc:
                return self._failed_early(act, exc)
            if reason is not None:
                return Skipped(reason)
        if node.render is not None:
            try:
                ctx.config = node.render(resolver_for(self.run, node.id, ctx))
            except SibylError as exc:
                return self._failed_early(act, exc)
        if node.kind == "task":
            try:
                act.info = get_technique(node.technique)
            except SibylError as exc:
                return self._failed_early(act, exc)
            for hook in self.hooks:
                hit = hook.before_node(node, ctx)
                if hit is not MISSING:
                    now = _perf()
                    return Done(hit, now, now, 0, CACHED)
        return None

    def _failed_early(self, act: Activation, exc: BaseException) -> Failed:
        now = _perf()
        return Failed(NodeFailure(act.node, act.iteration, 0, exc), now, now)

    def _skip_reason(self, node: Node, ctx: StepContext) -> str | None:
        if node.id in self.pruned:
            return "lazy: output not consumed"
        assert node.guard is not None
        try:
            ok = node.guard.evaluate(resolver_for(self.run, node.id, ctx))
        except SibylError as exc:
            raise TemplateError(
                f"condition of node '{node.id}': {exc.message}",
                path=node.guard.path or node.path,
                line=node.guard.line or node.line,
            ) from None
        return None if ok else f"condition false: {node.guard.text}"

    # ------------------------------------------------------------------ 3. run
    def _run_inline(self, act: Activation) -> Outcome | None:
        """The first attempt, inline. None when it needs the async path (it raised or returned an
        awaitable): :meth:`_run` picks up from ``first_error`` / ``awaiting``."""
        assert act.info is not None
        if self._emit:
            self._begin(act, 1, _perf())
        else:
            act.started = _perf()
        try:
            out = act.info.fn(act.ctx)
        except Interrupt as pause:
            return Paused(pause)
        except Exception as exc:
            act.first_error = exc
            return None
        if type(out) is not dict and out is not None:
            if inspect.isawaitable(out):
                act.awaiting = out
                return None
            if inspect.isgenerator(out) or inspect.isasyncgen(out):
                act.first_error = _generator_error(act.node, out)
                return None
        return Done(out, act.started, _perf(), 1)

    async def _run(self, act: Activation) -> Outcome:
        """Attempts with retry/backoff, then fallbacks: always an outcome (cancellation aside)."""
        node = act.node
        try:
            out, attempts = await self._attempts(node, act.ctx, act.info, act, act.first_error)
            return Done(out, act.started, _perf(), attempts)
        except Interrupt as pause:  # a pause, not a failure: no retry, no fallback
            return Paused(pause)
        except _AttemptsFailed as failed:
            error, attempts = failed.error, failed.attempts
        t1 = _perf()
        recovered = bool(node.fallbacks)
        self._record(
            node,
            act.iteration,
            "failed",
            act.started or t1,
            t1,
            attempts,
            error=_describe(error),
            reason="fallback takes over" if recovered else None,
        )
        if self._emit:
            self._event(
                EventKind.NODE_FAILED,
                node,
                act.iteration,
                technique=node.technique,
                attempts=attempts,
                error=_describe(error),
                recovered=recovered,
            )
        fallback_errors: list[tuple[str, BaseException]] = []
        for fb in node.fallbacks:
            out = await self._run_fallback(act, fb, fallback_errors)
            if out is not MISSING:
                return Done(out, act.started, _perf(), attempts, RECOVERED)
        failure = NodeFailure(node, act.iteration, attempts, error, fallback_errors)
        return Failed(failure, act.started, t1, recorded=True)

    async def _run_fallback(self, act: Activation, fb: Node, errors: list[tuple[str, BaseException]]) -> Any:
        """One fallback in the failed node's place: its output, or MISSING (its error appended)."""
        it = act.iteration
        fctx = StepContext(self.run, fb.id, fb.technique, fb.config, act.preds, it)
        fact = Activation(fb, it, act.preds, fctx)
        try:
            if fb.render is not None:
                fctx.config = fb.render(resolver_for(self.run, fb.id, fctx))
            fact.info = get_technique(fb.technique)
            out, attempts = await self._attempts(fb, fctx, fact.info, fact, None, fallback_for=act.node.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc.error if isinstance(exc, _AttemptsFailed) else exc
            attempts = exc.attempts if isinstance(exc, _AttemptsFailed) else 1
            errors.append((fb.id, error))
            now = _perf()
            self._record(
                fb,
                it,
                "failed",
                fact.started or now,
                now,
                attempts,
                error=_describe(error),
                fallback_for=act.node.id,
            )
            if self._emit:
                self._event(
                    EventKind.NODE_FAILED,
                    fb,
                    it,
                    technique=fb.technique,
                    attempts=attempts,
                    error=_describe(error),
                    recovered=False,
                    fallback_for=act.node.id,
                )
            return MISSING
        f1 = _perf()
        self.run.results[fb.id] = out
        self._record(fb, it, RAN, fact.started, f1, attempts, output=out, fallback_for=act.node.id)
        if self._emit:
            self._event(
                EventKind.NODE_FINISHED,
                fb,
                it,
                technique=fb.technique,
                output=out,
                duration=f1 - fact.started,
                attempts=attempts,
                fallback_for=act.node.id,
            )
        return out

    async def _attempts(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo | None,
        act: Activation,
        first_error: BaseException | None,
        fallback_for: str | None = None,
    ) -> tuple[Any, int]:
        """Call until an attempt succeeds: (output, attempts); raises :class:`_AttemptsFailed`."""
        policy = node.retry
        max_attempts = policy.max_attempts if policy else 1
        attempt = 1
        error = first_error
        while True:
            if error is None:
                try:
                    ctx.attempt = attempt
                    if act.awaiting is not None:  # the inline first attempt returned an awaitable
                        call, act.awaiting = act.awaiting, None
                        out = await self._with_timeout(node, call)
                    else:
                        out = await self._call(node, ctx, info, act, attempt, fallback_for)
                    return await _as_output(node, out), attempt
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = exc
            if isinstance(error, Interrupt):
                raise error
            if isinstance(error, (TemplateError, TechniqueOutputError)) or attempt >= max_attempts:
                raise _AttemptsFailed(error, attempt)
            delay = policy.delay(attempt, self.run.rng) if policy else 0.0
            if self._emit:
                self._event(
                    EventKind.NODE_RETRYING,
                    node,
                    act.iteration,
                    technique=node.technique,
                    attempt=attempt,
                    delay=delay,
                    error=_describe(error),
                )
            self.run.retries += 1
            await asyncio.sleep(delay)
            attempt += 1
            error = None

    async def _call(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo | None,
        act: Activation,
        attempt: int,
        fallback_for: str | None,
    ) -> Any:
        """One attempt: a dynamic subgraph, an async technique, sync code in a thread, or inline."""
        if node.kind != "task":  # a graph node: built at run time, for_each, a pipeline subgraph
            self._begin(act, attempt, _perf(), fallback_for)
            return await self._with_timeout(node, self._run_graph_node(node, ctx))
        assert info is not None
        if not info.is_async and self._local and (info.blocking or node.timeout is not None):
            return await self._in_thread(node, ctx, info, act, attempt, fallback_for)
        self._begin(act, attempt, _perf(), fallback_for)
        if self._local:
            if info.is_async:
                return await self._with_timeout(node, info.fn(ctx))
            return info.fn(ctx)
        return await self._with_timeout(
            node, self.executor.call(info, ctx, offload=info.blocking and not info.is_async)
        )

    def _run_graph_node(self, node: Node, ctx: StepContext) -> Any:
        """The coroutine that runs a node of kind ``dynamic`` / ``map`` / ``subgraph`` (nested schedulers)."""
        if node.kind == "dynamic":
            from .dynamic import run_dynamic

            return run_dynamic(self, node, ctx)
        if node.kind == "map":
            from .fanout import run_for_each

            return run_for_each(self, node, ctx)
        if node.kind == "subgraph":
            from .subgraph import run_subgraph

            return run_subgraph(self, node, ctx)
        raise TechniqueError(f"unknown node kind '{node.kind}'", node_id=node.id, technique=node.technique)

    async def _with_timeout(self, node: Node, call: Any) -> Any:
        """Await a technique's (or graph node's) call, within the node's timeout."""
        await in_task()  # user code and asyncio.timeout may need a current task (engine/sync.py)
        if node.timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, node.timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"timed out after {node.timeout:g} s") from None

    async def _in_thread(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo,
        act: Activation,
        attempt: int,
        fallback_for: str | None,
    ) -> Any:
        """Sync code in a worker thread: started is measured in the thread; on timeout/cancel the
        thread is told to stop (``ctx.cancelled``) and, while it runs on, tracked for ``warnings``.

        With a worker free, ``node_started`` is emitted as the call is handed over (the code begins
        within microseconds); when every worker is busy the thread itself reports when it began."""
        loop = asyncio.get_running_loop()
        cancel = act.cancel = threading.Event()
        ctx._cancel = cancel
        queued = self._busy_threads >= _POOL_WORKERS
        began: list[float] = []

        def work() -> Any:
            t = _perf()
            began.append(t)
            if queued:
                loop.call_soon_threadsafe(self._begin, act, attempt, t, fallback_for)
            try:
                return info.fn(ctx)
            finally:
                act.thread_running = False

        if not queued:
            self._begin(act, attempt, _perf(), fallback_for)
        self._busy_threads += 1
        act.thread_running = True
        future = loop.run_in_executor(None, work)
        future.add_done_callback(self._thread_freed)
        try:
            if node.timeout is None:
                out = await asyncio.shield(future)
            else:
                await in_task()  # wait_for needs a current task on Python >= 3.12
                try:
                    out = await asyncio.wait_for(asyncio.shield(future), node.timeout)
                except asyncio.TimeoutError:
                    raise TimeoutError(f"timed out after {node.timeout:g} s") from None
            if attempt == 1 and began:
                act.started = began[0]  # when the worker began it, not when it was handed over
            return out
        except BaseException:
            if act.thread_running:
                cancel.set()
                self._threads.append(act)
                future.add_done_callback(lambda f: f.cancelled() or f.exception())  # never "unretrieved"
            raise

    def _thread_freed(self, _future: Any) -> None:
        self._busy_threads -= 1

    def _begin(self, act: Activation, attempt: int, t: float, fallback_for: str | None = None) -> None:
        """The node's code begins now: record when (first attempt) and tell the observers."""
        if not act.started:
            act.started = t
        if self._emit:
            data: dict[str, Any] = {"technique": act.node.technique, "attempt": attempt}
            if fallback_for is not None:
                data["fallback_for"] = fallback_for
            self._emit(
                Event(EventKind.NODE_STARTED, self.run.run_id, act.node.id, act.iteration, time.time(), data)
            )

    def _spawn(self, act: Activation) -> None:
        task = asyncio.ensure_future(self._run(act))
        self._tasks[task] = act
        self._inflight += 1
        if act.node.limit_key is not None:
            key = act.node.limit_key
            self._inflight_by[key] = self._inflight_by.get(key, 0) + 1
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        # stays in _tasks until settled, so a snapshot taken meanwhile still lists it in the frontier
        self._done.append((task, self._tasks[task]))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _release(self, node: Node) -> None:
        self._inflight -= 1
        key = node.limit_key
        if key is not None:
            self._inflight_by[key] -= 1
            q = self._blocked.get(key)
            if q:
                self._ready.append(q.popleft())
        q = self._blocked.get(None)
        if q:
            self._ready.append(q.popleft())

    def _unblock_all(self) -> bool:
        """Nothing is in flight, so every concurrency limit has room: blocked nodes become ready (a
        node run inline or awaited directly never passes through :meth:`_release`)."""
        moved = False
        for q in self._blocked.values():
            while q:
                self._ready.append(q.popleft())
                moved = True
        return moved

    # ------------------------------------------------------------------ 4. settle
    def _settle(self, act: Activation, outcome: Outcome) -> None:
        """Record the outcome, store the output, resolve out-edges (and a loop that ended), then tell
        the observers: a checkpoint written on ``node_finished`` already holds the edges it fired."""
        node = act.node
        it = act.iteration
        run = self.run
        event: Event | None = None
        if type(outcome) is Done:
            out = outcome.output
            run.results[node.id] = out
            status = outcome.status
            if status != RECOVERED:  # a recovered node's records were written as it failed
                self._record(node, it, status, outcome.started, outcome.ended, outcome.attempts, output=out)
            self._runs[node.index] += 1
            run.last_completed = node.id
            for li in node.feeds:
                self._loops[li].value = node.id
            self._resolve(node, it, RAN)
            if self._emit and status != RECOVERED:
                if status == CACHED:
                    event = self._make_event(
                        EventKind.NODE_CACHED, node, it, technique=node.technique, output=out
                    )
                else:
                    event = self._make_event(
                        EventKind.NODE_FINISHED,
                        node,
                        it,
                        technique=node.technique,
                        output=out,
                        duration=outcome.ended - outcome.started,
                        attempts=outcome.attempts,
                    )
        elif type(outcome) is Skipped:
            now = _perf()
            self._record(node, it, "skipped", now, now, 0, reason=outcome.reason)
            if outcome.bypass:
                run.passthrough[node.id] = act.preds
            self._resolve(node, it, "bypassed" if outcome.bypass else "skipped")
            if self._emit:
                event = self._make_event(EventKind.NODE_SKIPPED, node, it, reason=outcome.reason)
        elif type(outcome) is Paused:
            pause = outcome.interrupt
            now = _perf()
            self._record(
                node, it, INTERRUPTED, now, now, 1, output=record_output(pause), reason="waiting for input"
            )
            self._paused.append((node, act.preds))
            self.stopped_by = INTERRUPTED
            if self._emit:
                event = self._make_event(
                    EventKind.INTERRUPTED, node, it, payload=pause.payload, answers=pause.answers
                )
        else:
            assert isinstance(outcome, Failed)  # the last of Outcome's four kinds
            failure = outcome.failure
            if not outcome.recorded:
                error = _describe(failure.cause)
                self._record(
                    node, it, "failed", outcome.started, outcome.ended, failure.attempts, error=error
                )
            if self._failure is None:
                self._failure = failure
        if node.loop >= 0:
            state = self._loops[node.loop]
            state.live -= 1
            if state.live == 0:
                self._maybe_end_loop(node.loop)
        if event is not None:
            self._emit(event)  # type: ignore[misc]
        if self._deferred_events:
            self._flush_deferred()

    # ------------------------------------------------------------------ edges
    def _push(self, node: Node, preds: tuple[str, ...]) -> None:
        if node.loop >= 0:
            state = self._loops[node.loop]
            state.live += 1
            state.started = True
        self._ready.append((node, preds))

    def _resolve(self, node: Node, it: int, outcome: str) -> None:
        """Resolve out-edges of ``node`` (and, iteratively, of nodes dead-path-skipped by it); a
        loop's exit edges wait for the loop to end (:meth:`_end_loop`)."""
        nodes = self.graph.nodes
        if node.plain_out and outcome != "skipped":  # fast path: unconditional forward edges only
            i = node.index
            self._last[i] = outcome
            self._out_fired[i] = True
            for e in node.out_edges:
                self._arrive(nodes[e.dst], node.id, None)
            return
        work: list[tuple[Node, str, int]] = [(node, outcome, it)]
        while work:
            src, oc, sit = work.pop()
            self._last[src.index] = oc
            edges = src.out_edges
            if not edges:
                continue
            if src.plain_out and oc != "skipped":
                self._out_fired[src.index] = True
                for e in edges:
                    self._arrive(nodes[e.dst], src.id, work)
                continue
            fired_any = False
            conditional = False
            for e in edges:
                if e.exit:
                    continue
                if e.default:
                    fire = oc != "skipped" and not fired_any and (e.when is None or e.when == oc)
                else:
                    fire = oc != "skipped" and (e.when is None or e.when == oc)
                    if e.condition is not None:
                        conditional = True
                        if fire:
                            fire = self._check(e, src, sit)
                            if self._failure is not None:
                                return
                if fire:
                    fired_any = True
                if e.back:
                    if fire:
                        self._reenter(e, src)
                    continue
                self._arrive(nodes[e.dst], src.id if fire else None, work)
            self._out_fired[src.index] = fired_any
            if conditional and not fired_any and oc == RAN and src.loop < 0:
                self._warn_no_branch(src, sit, edges)

    def _arrive(self, dst: Node, fired_from: str | None, work: list[tuple[Node, str, int]] | None) -> None:
        """One resolved in-edge of ``dst``: ready when all are resolved and one fired, else skipped
        (appended to ``work``, which may be None only when ``fired_from`` is given)."""
        i = dst.index
        self._pending[i] -= 1
        if fired_from is not None:
            self._fired[i].append(fired_from)
        if self._pending[i] != 0:
            return
        if self._fired[i]:
            self._push(dst, self._preds_of(self._fired[i]))
            return
        dit = self._acts[i] + 1
        self._acts[i] = dit
        now = _perf()
        self._record(dst, dit, "skipped", now, now, 0, reason="no incoming edge fired")
        if self._emit:
            self._deferred_events.append(
                self._make_event(EventKind.NODE_SKIPPED, dst, dit, reason="no incoming edge fired")
            )
        assert work is not None
        work.append((dst, "skipped", dit))

    def _warn_no_branch(self, src: Node, it: int, edges: list[Edge]) -> None:
        conds = ", ".join(f"{e.dst} if {e.condition.text}" for e in edges if e.condition is not None)
        label = f"'{src.id}'" + (f" (iteration {it})" if it > 1 else "")
        text = f"node {label}: no outgoing edge fired ({conds}); add a `default: true` edge for the else case"
        self.warnings.append(text)
        if self._emit:
            self._deferred_events.append(
                self._make_event(EventKind.CUSTOM, src, it, kind="no_branch", message=text)
            )

    def _preds_of(self, fired: list[str]) -> tuple[str, ...]:
        """Fired predecessors in declaration order, so a join's inputs never depend on timing."""
        if len(fired) > 1:
            nodes = self.graph.nodes
            fired = sorted(fired, key=lambda p: nodes[p].index if p in nodes else -1)
        passthrough = self.run.passthrough
        if not passthrough:
            return tuple(fired)
        out: list[str] = []
        todo = list(fired)
        seen: set[str] = set()
        while todo:  # a bypassed predecessor hands on its own upstream
            p = todo.pop(0)
            if p in seen:
                continue
            seen.add(p)
            if p in passthrough and p not in self.run.results:
                todo.extend(passthrough[p])
            else:
                out.append(p)
        return tuple(out)

    def _check(self, e: Edge, src: Node, it: int, reads: str | None = None) -> bool:
        """Evaluate ``e.condition`` against the output of ``reads`` (default: the edge's source)."""
        who = reads or src.id
        scope = _EdgeScope(who, self.run.results.get(who), it)
        resolve = resolver_for(self.run, src.id, scope)
        assert e.condition is not None
        try:
            for ref in e.condition.refs:
                if resolve(ref) is MISSING and ref.default is None:
                    raise TemplateError(
                        f"condition '{e.condition.text}': {ref} has no value "
                        f"(output of '{who}' is {short_repr(self.run.results.get(who))})"
                    )
            return e.condition.evaluate(resolve)
        except SibylError as exc:
            where = f"{e.path} (line {e.line})" if e.line else e.path
            error = TemplateError(f"edge {e.src} -> {e.dst} at {where}: {exc.message}")
            now = _perf()
            self._record(src, it, "failed", now, now, 1, error=_describe(error))
            if self._failure is None:
                self._failure = NodeFailure(src, it, 1, error)
            return False

    # ------------------------------------------------------------------ loops
    def _reenter(self, e: Edge, src: Node) -> None:
        target = self.graph.nodes[e.dst]
        ti = target.index
        if self._runs[ti] >= target.max_iterations:
            self.stopped_by = "max_iterations"
            if target.loop >= 0:
                self._loops[target.loop].capped = True
            if self._emit:
                self._deferred_events.append(
                    self._make_event(
                        EventKind.CUSTOM,
                        target,
                        self._acts[ti],
                        kind="max_iterations",
                        max_iterations=target.max_iterations,
                        edge=f"{e.src}->{e.dst}",
                    )
                )
            return
        region, inner = self.graph.region(target.id)
        nodes = self.graph.nodes
        for nid in region:
            i = nodes[nid].index
            self._pending[i] = self._need[i] = inner[nid]
            self._fired[i] = [p for p in self._fired[i] if p not in region]
        self._pending[ti] = self._need[ti] = 0
        self._push(target, (src.id,))

    def _maybe_end_loop(self, li: int) -> None:
        """The loop has nothing ready or running: it has ended unless a node waits half-resolved."""
        state = self._loops[li]
        if state.done or not state.started or self._failure is not None:
            return
        nodes = self.graph.nodes
        if any(n.loop == li for n, _ in self._paused):
            return  # a loop node waits for input: the loop goes on after the resume
        for nid in self.graph.loops[li].nodes:
            i = nodes[nid].index
            if 0 < self._pending[i] < self._need[i]:
                return
        self._end_loop(li)

    def _end_loop(self, li: int) -> None:
        """Resolve the loop's exit edges once, against the latest outputs (see the module docstring)."""
        state = self._loops[li]
        state.done = True
        loop: Loop = self.graph.loops[li]
        nodes = self.graph.nodes
        work: list[tuple[Node, str, int]] = []
        by_src: dict[str, list[Edge]] = {}
        for e in loop.exit_edges:
            by_src.setdefault(e.src, []).append(e)
        for src_id, edges in by_src.items():
            src = nodes[src_id]
            i = src.index
            reads = src_id
            carries = src_id in loop.feeders  # a back edge's source hands on the loop value
            if carries:
                reads = state.value or src_id
                oc = RAN if state.value is not None else "skipped"
            elif self._runs[i] > 0:
                oc = RAN
            else:
                oc = self._last[i] or "skipped"
            fired_any = self._out_fired[i] and not carries
            for e in edges:
                fire = oc != "skipped" and (e.when is None or e.when == oc)
                if fire and state.capped:
                    pass  # the cap ended the loop: exits are taken whatever their conditions say
                elif fire and e.default:
                    fire = not fired_any
                elif fire and e.condition is not None:
                    fire = self._check(e, src, self._acts[i], reads)
                    if self._failure is not None:
                        return
                if fire:
                    fired_any = True
                    state.exits_fired.append(e.dst)
                self._arrive(nodes[e.dst], reads if fire else None, work)
        if loop.exit_edges and not state.exits_fired:
            targets = ", ".join(dict.fromkeys(e.dst for e in loop.exit_edges))
            self.warnings.append(f"loop at '{loop.header}' ended and none of its exits fired ({targets})")
        while work:
            node, oc, it = work.pop()
            self._resolve(node, it, oc)
        for dst in dict.fromkeys(e.dst for e in loop.exit_edges):
            dloop = nodes[dst].loop
            if dloop >= 0 and self._loops[dloop].live == 0:
                self._maybe_end_loop(dloop)

    def _end_idle_loops(self) -> bool:
        """Nothing can run any more: end loops still waiting (a half-resolved node never completes).
        True when that made something ready."""
        paused = {n.loop for n, _ in self._paused}
        for li, state in enumerate(self._loops):
            if state.started and not state.done and self._failure is None and li not in paused:
                self._end_loop(li)
        return bool(self._ready)

    # ------------------------------------------------------------------ output
    def output(self) -> Any:
        """What this graph returns (``result.output``): one exit, its output; several exits, a dict
        ``{exit: output}`` with every exit in declaration order (``None`` for one that produced
        nothing). An exit that is a loop's back-edge source gives the loop value, so a graph ending in
        a loop returns the same shape whether the loop ended by its condition or by the cap."""
        exits = self.graph.exits
        if len(exits) == 1:
            return self._exit_value(exits[0])
        return {x: self._exit_value(x) for x in exits}

    def _exit_value(self, nid: str) -> Any:
        nodes = self.graph.nodes
        node = nodes.get(nid)
        results = self.run.results
        if node is not None and node.loop >= 0 and nid in self.graph.loops[node.loop].feeders:
            value = self._loops[node.loop].value
            return results.get(value) if value is not None else None
        if node is not None and (
            self._last[node.index] == RAN or (self._runs[node.index] and node.loop >= 0)
        ):
            return results.get(nid)
        return None

    # ------------------------------------------------------------------ failure
    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t, act in list(self._done):
            if t.cancelled():
                now = _perf()
                self._record(
                    act.node,
                    act.iteration,
                    "cancelled",
                    act.started or now,
                    now,
                    0,
                    error="cancelled: another node failed",
                )
        self._done.clear()
        self._note_threads()

    def _note_threads(self) -> None:
        """Name the worker threads a timeout / cancellation abandoned that are still running."""
        for act in self._threads:
            if act.thread_running:
                self.warnings.append(
                    f"node '{act.node.id}' (iteration {act.iteration}): its worker thread was still running "
                    f"when the run ended (Python cannot stop a thread; ctx.cancelled told it to stop, and its "
                    f"output will be discarded)"
                )
        self._threads.clear()

    def failure_error(self) -> NodeExecutionError | None:
        f = self._failure
        if f is None:
            return None
        cause = f.cause
        if isinstance(cause, SibylError) and not isinstance(cause, NodeExecutionError):
            message = cause.message
        else:
            message = _describe(cause)
        for fb_id, fb_error in f.fallback_errors:
            message += f"; fallback '{fb_id}' failed too: {_describe(fb_error)}"
        error = NodeExecutionError(
            message,
            node_id=f.node.id,
            technique=f.node.technique,
            attempts=f.attempts,
            cause=cause,
            iteration=f.iteration,
            path=f.node.path or None,
            line=f.node.line,
        )
        error.fallback_errors = list(f.fallback_errors)  # type: ignore[attr-defined]
        return error

    # ------------------------------------------------------------------ records & events
    def _record(
        self,
        node: Node,
        it: int,
        status: str,
        t0: float,
        t1: float,
        attempts: int,
        *,
        output: Any = None,
        error: str | None = None,
        fallback_for: str | None = None,
        reason: str | None = None,
    ) -> None:
        base = self.run.t0
        self.run.records.append(
            StepRecord(
                node.id,
                node.technique,
                it,
                status,
                t0 - base,
                t1 - base,
                attempts,
                output,
                error,
                reason,
                fallback_for,
                node.group,
            )
        )

    def _make_event(self, event_kind: EventKind, node: Node, it: int, **data: Any) -> Event:
        return Event(event_kind, self.run.run_id, node.id, it, time.time(), data)

    def _event(self, event_kind: EventKind, node: Node, it: int, **data: Any) -> None:
        assert self._emit is not None
        self._emit(Event(event_kind, self.run.run_id, node.id, it, time.time(), data))

    def _flush_deferred(self) -> None:
        events, self._deferred_events = self._deferred_events, []
        if self._emit:
            for ev in events:
                self._emit(ev)

    def running(self) -> frozenset[str]:
        """Ids of nodes with a call in flight. Safe to call from another thread (a live view polls it)."""
        for _ in range(3):  # the loop thread may add/remove a task while we copy
            try:
                return frozenset(act.node.id for act in list(self._tasks.values()))
            except RuntimeError:
                continue
        return frozenset()

    # ------------------------------------------------------------------ checkpoints
    def snapshot(self, only: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON-able progress: what ran, loop counters, edge state and the frontier (running nodes
        count as ready, with the predecessors they were started with: they had not finished, so a
        resume runs them again). ``only`` limits the per-node maps to those ids (incremental
        checkpoints write just the nodes a step touched, so a checkpoint never scans the graph)."""
        frontier = [[n.id, list(p)] for n, p in self._ready]
        frontier += [[a.node.id, list(a.preds)] for a in self._tasks.values()]
        for q in self._blocked.values():
            frontier += [[n.id, list(p)] for n, p in q]
        frontier += [[n.id, list(p)] for n, p in self._paused]
        picked = self._nodes
        if only is not None:
            gn = self.graph.nodes
            picked = [gn[i] for i in only if i in gn]
        snap: dict[str, Any] = {
            "pending": {n.id: self._pending[n.index] for n in picked},
            "need": {n.id: self._need[n.index] for n in picked},
            "fired": {
                n.id: list(self._fired[n.index]) for n in picked if self._fired[n.index] or only is not None
            },
            "runs": {n.id: self._runs[n.index] for n in picked},
            "acts": {n.id: self._acts[n.index] for n in picked},
            "last": {n.id: self._last[n.index] for n in picked if self._last[n.index] is not None},
            "frontier": frontier,
            "stopped_by": self.stopped_by,
        }
        if self._loops:
            snap["loops"] = [[s.value, s.capped, s.done, s.started] for s in self._loops]
        return snap

    def _restore(self, snap: dict[str, Any]) -> None:
        nodes = self.graph.nodes
        for key, array in (("pending", self._pending), ("runs", self._runs), ("acts", self._acts)):
            for nid, v in snap.get(key, {}).items():
                if nid in nodes:
                    array[nodes[nid].index] = v
        self._need = list(self._pending)
        for nid, v in snap.get("need", {}).items():
            if nid in nodes:
                self._need[nodes[nid].index] = v
        for nid, v in snap.get("fired", {}).items():
            if nid in nodes:
                self._fired[nodes[nid].index] = list(v)
        for nid, v in snap.get("last", {}).items():
            if nid in nodes:
                self._last[nodes[nid].index] = v
        for li, row in enumerate(snap.get("loops") or ()):
            if li < len(self._loops):
                state = self._loops[li]
                state.value, state.capped, state.done, state.started = row
        for nid, preds in snap.get("frontier", []):
            node = nodes[nid]
            # the interrupted activation is redone under the same iteration number
            self._acts[node.index] = self._runs[node.index]
            self._push(node, tuple(preds))
        stopped = snap.get("stopped_by", "completed")
        self.stopped_by = "completed" if stopped == INTERRUPTED else stopped  # a resume answers the pause


class _AttemptsFailed(Exception):
    def __init__(self, error: BaseException, attempts: int) -> None:
        self.error = error
        self.attempts = attempts
        super().__init__(str(error))


async def _as_output(node: Node, out: Any) -> Any:
    """A technique's return value as an output: an awaitable is awaited, a generator refused."""
    if type(out) is dict or out is None:
        return out
    if inspect.isawaitable(out):
        await in_task()
        out = await out
    if inspect.isgenerator(out) or inspect.isasyncgen(out):
        raise _generator_error(node, out)
    return out


def _generator_error(node: Node, out: Any) -> TechniqueOutputError:
    kind = "an async generator" if inspect.isasyncgen(out) else "a generator"
    return TechniqueOutputError(
        f"technique '{node.technique}' returned {kind} instead of an output: return the value "
        f"(e.g. list(...) of what it yields, or the joined text); a generator is not run for you",
        node_id=node.id,
        technique=node.technique,
        path=node.path or None,
        line=node.line,
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, SibylError):
        return f"{type(exc).__name__}: {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
