"""The one scheduler: runs any :class:`GraphIR` on asyncio with the DESIGN semantics.

- A node is ready when all its forward in-edges are resolved and at least one fired (or it is an
  entry). Ready nodes start at once, up to ``max_concurrent``; there is no superstep barrier.
- Out-edge conditions decide fire/skip; a node whose in-edges all skipped is skipped and that
  propagates (dead-path elimination), so joins after a conditional branch still run.
- A fired back edge re-activates its target (next iteration) until ``max_iterations``, which ends
  the loop gracefully with ``stopped_by="max_iterations"``.
- A failure, after retries, runs the node's fallbacks; with none, running nodes are cancelled and
  :class:`NodeExecutionError` names node, technique, attempt and cause.

Fast paths matter (per-node overhead is a goal): a non-blocking sync technique runs inline, an
async one that has no siblings is awaited directly, and only real concurrency creates tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import NodeExecutionError, SibylError, TemplateError
from ..spec.expressions import MISSING
from ..techniques.context import StepContext
from ..techniques.registry import TechniqueInfo, get_technique
from .events import Event
from .executors import LocalExecutor
from .interrupt import INTERRUPTED, Interrupt, record_output
from .ir import Edge, GraphIR, Node
from .result import StepRecord
from .scope import resolver_for

__all__ = ["Scheduler", "NodeFailure"]

_perf = time.perf_counter


class NodeFailure(Exception):
    """Internal: a node failed for good (after retries and fallbacks)."""

    def __init__(self, node: Node, iteration: int, attempts: int, cause: BaseException) -> None:
        self.node = node
        self.iteration = iteration
        self.attempts = attempts
        self.cause = cause
        super().__init__(str(cause))


class _EdgeScope:
    """The scope an edge condition sees: bare fields read the edge source's output."""

    __slots__ = ("upstream", "iteration")

    def __init__(self, src: str, output: Any, iteration: int) -> None:
        self.upstream = {src: output}
        self.iteration = iteration


class Scheduler:
    """Runs one graph against one run state (``run``: results, records, bus, session...)."""

    def __init__(
        self,
        graph: GraphIR,
        run: Any,
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
        self.executor = executor or LocalExecutor()
        self._local = isinstance(self.executor, LocalExecutor)
        self.hooks = tuple(hooks)
        self.pruned = pruned
        n = len(graph.nodes)
        self._nodes = list(graph.nodes.values())
        self._pending = [node.n_fwd_in for node in self._nodes]
        self._fired: list[list[str]] = [[] for _ in range(n)]
        self._runs = [0] * n  # executions that ran (for max_iterations)
        self._acts = [0] * n  # activations (ran, bypassed, skipped) = iteration numbers
        self._ready: deque[tuple[Node, tuple[str, ...]]] = deque()
        self._inflight = 0
        self._inflight_by: dict[str, int] = {}
        self._blocked: dict[str | None, deque[tuple[Node, tuple[str, ...]]]] = {}
        self._tasks: dict[asyncio.Task[Any], tuple[Node, int, tuple[str, ...]]] = {}
        self._done: deque[tuple[asyncio.Task[Any], Node, int]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._failure: NodeFailure | None = None
        self._emit = run.bus.emit if run.bus else None
        self._deferred_events: list[Event] = []
        self._paused: list[tuple[Node, tuple[str, ...]]] = []  # interrupted, in the frontier of a resume
        self._task_preds: dict[asyncio.Task[Any], tuple[str, ...]] = {}
        self.stopped_by = "completed"
        if restore is not None:
            self._restore(restore)
        else:
            for node in graph.entries:
                self._ready.append((node, ()))

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
                i = node.index
                it = self._acts[i] + 1
                self._acts[i] = it
                ctx = StepContext(self.run, node.id, node.technique, node.config, preds, it)
                if node.guard is not None or node.id in self.pruned:
                    try:
                        reason = self._skip_reason(node, ctx)
                    except SibylError as exc:
                        self._fail_now(node, it, 0, exc)
                        break
                    if reason is not None:
                        self._finish_skip(node, it, preds, reason, bypass=True)
                        continue
                if node.render is not None:
                    try:
                        ctx.config = node.render(resolver_for(self.run, node.id, ctx))
                    except SibylError as exc:
                        self._fail_now(node, it, 0, exc)
                        break
                info: TechniqueInfo | None = None
                if node.kind == "task":
                    try:
                        info = get_technique(node.technique)
                    except SibylError as exc:
                        self._fail_now(node, it, 0, exc)
                        break
                    if self.hooks and self._try_hooks(node, ctx, it, preds):
                        continue
                    alone = not ready and self._inflight == 0
                    if local and not info.is_async and node.timeout is None and (not info.blocking or alone):
                        # inline fast path: one attempt, no task, no thread
                        if self._emit:
                            self._event("node_started", node, it, technique=node.technique, attempt=1)
                        t0 = _perf()
                        try:
                            out = info.fn(ctx)
                        except Exception as exc:  # retries/fallbacks take the async path
                            if alone:
                                await self._run_direct(node, ctx, info, it, exc, t0)
                            else:
                                self._spawn(node, ctx, info, it, exc, t0)
                            continue
                        self._complete(node, it, out, t0, _perf(), 1, preds)
                        continue
                    if alone:
                        await self._run_direct(node, ctx, info, it, None, _perf())
                        continue
                elif node.kind == "entry":
                    t0 = _perf()
                    self._complete(node, it, self.run.input, t0, t0, 1, preds)
                    continue
                elif not ready and self._inflight == 0:
                    await self._run_direct(node, ctx, info, it, None, _perf())
                    continue
                self._spawn(node, ctx, info, it, None, _perf())
            if self._failure is not None:
                await self._cancel_all()
                return
            if self._inflight == 0:
                if ready:
                    continue
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
                task, node, it = self._done.popleft()
                self._tasks.pop(task, None)
                self._release(node)
                try:
                    outcome = task.result()
                except asyncio.CancelledError:
                    continue
                except NodeFailure as failure:
                    if self._failure is None:
                        self._failure = failure
                    continue
                except Interrupt as pause:
                    self._pause(node, it, self._preds_for_pause(task), pause)
                    continue
                self._apply(node, it, outcome)

    # ------------------------------------------------------------------ launching
    def _spawn(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo | None,
        it: int,
        first_error: BaseException | None,
        t0: float,
    ) -> None:
        task = asyncio.ensure_future(self._attempts(node, ctx, info, it, first_error, t0))
        self._tasks[task] = (node, it, ctx._preds if isinstance(ctx._preds, tuple) else ())
        self._inflight += 1
        if node.limit_key is not None:
            self._inflight_by[node.limit_key] = self._inflight_by.get(node.limit_key, 0) + 1
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        # stays in _tasks until applied, so a snapshot taken meanwhile still lists it in the frontier
        node, it, preds = self._tasks[task]
        self._task_preds[task] = preds
        self._done.append((task, node, it))
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

    async def _run_direct(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo | None,
        it: int,
        first_error: BaseException | None,
        t0: float,
    ) -> None:
        try:
            outcome = await self._attempts(node, ctx, info, it, first_error, t0)
        except NodeFailure as failure:
            self._failure = failure
            return
        except Interrupt as pause:
            self._pause(node, it, ctx._preds if isinstance(ctx._preds, tuple) else (), pause)
            return
        self._apply(node, it, outcome)

    def _apply(self, node: Node, it: int, outcome: tuple[Any, ...]) -> None:
        out, t0, t1, attempts, preds, status = outcome
        self._complete(node, it, out, t0, t1, attempts, preds, status=status)

    async def _attempts(
        self,
        node: Node,
        ctx: StepContext,
        info: TechniqueInfo | None,
        it: int,
        first_error: BaseException | None,
        t0: float,
    ) -> tuple[Any, ...]:
        """Attempts with retry/backoff, then fallbacks. Returns (output, t0, t1, attempts, preds, status)."""
        preds = ctx._preds if isinstance(ctx._preds, tuple) else ()
        policy = node.retry
        max_attempts = policy.max_attempts if policy else 1
        attempt = 1
        error = first_error
        if error is None and self._emit:
            self._event("node_started", node, it, technique=node.technique, attempt=1)
        while True:
            if error is None:
                try:
                    ctx.attempt = attempt
                    out = await self._call(node, ctx, info)
                    return out, t0, _perf(), attempt, preds, "ran"
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    error = exc
            if isinstance(error, Interrupt):
                raise error  # a pause, not a failure: no retry, no fallback
            if isinstance(error, TemplateError) or attempt >= max_attempts:
                break
            delay = policy.delay(attempt, self.run.rng) if policy else 0.0
            if self._emit:
                self._event(
                    "node_retrying",
                    node,
                    it,
                    technique=node.technique,
                    attempt=attempt,
                    delay=delay,
                    error=_describe(error),
                )
            self.run.retries += 1
            await asyncio.sleep(delay)
            attempt += 1
            error = None
            if self._emit:
                self._event("node_started", node, it, technique=node.technique, attempt=attempt)
        t1 = _perf()
        recovered = bool(node.fallbacks)
        self._record(
            node,
            it,
            "failed",
            t0,
            t1,
            attempt,
            error=_describe(error),
            reason="fallback takes over" if recovered else None,
        )
        if self._emit:
            self._event(
                "node_failed",
                node,
                it,
                technique=node.technique,
                attempts=attempt,
                error=_describe(error),
                recovered=recovered,
            )
        for fb in node.fallbacks:
            f0 = _perf()
            fctx = StepContext(self.run, fb.id, fb.technique, fb.config, preds, it)
            try:
                if fb.render is not None:
                    fctx.config = fb.render(resolver_for(self.run, fb.id, fctx))
                finfo = get_technique(fb.technique)
                if self._emit:
                    self._event(
                        "node_started", fb, it, technique=fb.technique, attempt=1, fallback_for=node.id
                    )
                fout, _, _, fattempts, _, _ = await self._attempts_plain(fb, fctx, finfo, it)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._record(fb, it, "failed", f0, _perf(), 1, error=_describe(exc), fallback_for=node.id)
                if self._emit:
                    self._event(
                        "node_failed",
                        fb,
                        it,
                        technique=fb.technique,
                        attempts=1,
                        error=_describe(exc),
                        recovered=False,
                        fallback_for=node.id,
                    )
                error = exc
                continue
            f1 = _perf()
            self.run.results[fb.id] = fout
            self._record(fb, it, "ran", f0, f1, fattempts, output=fout, fallback_for=node.id)
            if self._emit:
                self._event(
                    "node_finished",
                    fb,
                    it,
                    technique=fb.technique,
                    output=fout,
                    duration=f1 - f0,
                    attempts=fattempts,
                    fallback_for=node.id,
                )
            return fout, t0, f1, attempt, preds, "recovered"
        raise NodeFailure(node, it, attempt, error if error is not None else RuntimeError("failed"))

    async def _attempts_plain(
        self, node: Node, ctx: StepContext, info: TechniqueInfo, it: int
    ) -> tuple[Any, ...]:
        """A fallback's own attempts (its retry policy), without nested fallbacks."""
        policy = node.retry
        attempt = 1
        while True:
            try:
                ctx.attempt = attempt
                return await self._call(node, ctx, info), 0.0, 0.0, attempt, (), "ran"
            except asyncio.CancelledError:
                raise
            except Exception:
                if not policy or attempt >= policy.max_attempts:
                    raise
                await asyncio.sleep(policy.delay(attempt, self.run.rng))
                attempt += 1

    async def _call(self, node: Node, ctx: StepContext, info: TechniqueInfo | None) -> Any:
        if node.kind == "dynamic":
            from .dynamic import run_dynamic

            call = run_dynamic(self, node, ctx)
        elif node.kind == "map":
            from .fanout import run_for_each

            call = run_for_each(self, node, ctx)
        elif node.kind == "subgraph":
            from .subgraph import run_subgraph

            call = run_subgraph(self, node, ctx)
        else:
            assert info is not None
            offload = info.blocking and not info.is_async
            call = self.executor.call(info, ctx, offload=offload)
        if node.timeout is not None:
            try:
                return await asyncio.wait_for(call, node.timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"timed out after {node.timeout:g} s") from None
        return await call

    # ------------------------------------------------------------------ completion & edges
    def _complete(
        self,
        node: Node,
        it: int,
        out: Any,
        t0: float,
        t1: float,
        attempts: int,
        preds: tuple[str, ...],
        status: str = "ran",
    ) -> None:
        run = self.run
        if status != "recovered":
            run.results[node.id] = out
            self._record(node, it, status, t0, t1, attempts, output=out)
        else:
            run.results[node.id] = out
        self._runs[node.index] += 1
        run.last_completed = node.id
        self._resolve(node, it, "ran")
        if self._emit:
            if status == "cached":
                self._event("node_cached", node, it, technique=node.technique, output=out)
            elif status == "ran":
                self._event(
                    "node_finished",
                    node,
                    it,
                    technique=node.technique,
                    output=out,
                    duration=t1 - t0,
                    attempts=attempts,
                )
            self._flush_deferred()

    def _finish_skip(self, node: Node, it: int, preds: tuple[str, ...], reason: str, *, bypass: bool) -> None:
        now = _perf() - self.run.t0
        self.run.records.append(
            StepRecord(
                node.id, node.technique, it, "skipped", now, now, 0, None, None, reason, None, node.group
            )
        )
        if bypass:
            # a guard/lazy skip: successors still run and see this node's own upstream
            self.run.passthrough[node.id] = preds
        self._resolve(node, it, "bypassed" if bypass else "skipped")
        if self._emit:
            self._event("node_skipped", node, it, reason=reason)
            self._flush_deferred()

    def _resolve(self, node: Node, it: int, outcome: str) -> None:
        """Resolve out-edges of ``node`` (and, iteratively, of nodes dead-path-skipped by it)."""
        nodes = self.graph.nodes
        pending = self._pending
        fired = self._fired
        ready = self._ready
        work: list[tuple[Node, str, int]] = [(node, outcome, it)]
        while work:
            src, oc, sit = work.pop()
            for e in src.out_edges:
                fire = oc != "skipped" and (e.when is None or e.when == oc)
                if fire and e.condition is not None:
                    fire = self._check(e, src, sit)
                    if self._failure is not None:
                        return
                if e.back:
                    if fire:
                        self._reenter(e, src)
                    continue
                dst = nodes[e.dst]
                i = dst.index
                pending[i] -= 1
                if fire:
                    fired[i].append(src.id)
                if pending[i] == 0:
                    if fired[i]:
                        ready.append((dst, self._preds_of(fired[i])))
                    else:
                        dit = self._acts[i] + 1
                        self._acts[i] = dit
                        now = _perf() - self.run.t0
                        self.run.records.append(
                            StepRecord(
                                dst.id,
                                dst.technique,
                                dit,
                                "skipped",
                                now,
                                now,
                                0,
                                None,
                                None,
                                "no incoming edge fired",
                                None,
                                dst.group,
                            )
                        )
                        if self._emit:
                            self._deferred_events.append(
                                self._make_event("node_skipped", dst, dit, reason="no incoming edge fired")
                            )
                        work.append((dst, "skipped", dit))

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

    def _check(self, e: Edge, src: Node, it: int) -> bool:
        scope = _EdgeScope(src.id, self.run.results.get(src.id), it)
        resolve = resolver_for(self.run, src.id, scope)
        assert e.condition is not None
        try:
            for ref in e.condition.refs:
                if resolve(ref) is MISSING and ref.default is None:
                    raise TemplateError(
                        f"condition '{e.condition.text}': {ref} has no value "
                        f"(output of '{src.id}' is {_short(self.run.results.get(src.id))})"
                    )
            return e.condition.evaluate(resolve)
        except SibylError as exc:
            where = f"{e.path} (line {e.line})" if e.line else e.path
            self._fail_now(src, it, 1, TemplateError(f"edge {e.src} -> {e.dst} at {where}: {exc.message}"))
            return False

    def _reenter(self, e: Edge, src: Node) -> None:
        target = self.graph.nodes[e.dst]
        ti = target.index
        if self._runs[ti] >= target.max_iterations:
            self.stopped_by = "max_iterations"
            if self._emit:
                self._deferred_events.append(
                    self._make_event(
                        "custom",
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
            self._pending[i] = inner[nid]
            self._fired[i] = [p for p in self._fired[i] if p not in region]
        self._pending[ti] = 0
        self._ready.append((target, (src.id,)))

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

    def _try_hooks(self, node: Node, ctx: StepContext, it: int, preds: tuple[str, ...]) -> bool:
        for hook in self.hooks:
            before = getattr(hook, "before_node", None)
            if before is None:
                continue
            hit = before(node, ctx)
            if hit is not MISSING:
                now = _perf()
                self._complete(node, it, hit, now, now, 0, preds, status="cached")
                return True
        return False

    # ------------------------------------------------------------------ interrupts
    def _preds_for_pause(self, task: asyncio.Task[Any]) -> tuple[str, ...]:
        return self._task_preds.pop(task, ())

    def _pause(self, node: Node, it: int, preds: tuple[str, ...], pause: Interrupt) -> None:
        """``ctx.interrupt`` with no answer yet: record it, keep the node for the resume's frontier;
        nodes that do not depend on it run on, then the run stops with ``stopped_by="interrupted"``."""
        now = _perf() - self.run.t0
        self.run.records.append(
            StepRecord(
                node.id,
                node.technique,
                it,
                INTERRUPTED,
                now,
                now,
                1,
                record_output(pause),
                None,
                "waiting for input",
                None,
                node.group,
            )
        )
        self._paused.append((node, preds))
        self.stopped_by = INTERRUPTED
        if self._emit:
            self._event(INTERRUPTED, node, it, payload=pause.payload, answers=pause.answers)

    # ------------------------------------------------------------------ failure
    def _fail_now(self, node: Node, it: int, attempts: int, exc: BaseException) -> None:
        now = _perf() - self.run.t0
        self.run.records.append(
            StepRecord(
                node.id,
                node.technique,
                it,
                "failed",
                now,
                now,
                attempts,
                None,
                _describe(exc),
                None,
                None,
                node.group,
            )
        )
        if self._failure is None:
            self._failure = NodeFailure(node, it, attempts, exc)

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for t, node, it in list(self._done):
            if t.cancelled():
                now = _perf() - self.run.t0
                self.run.records.append(
                    StepRecord(
                        node.id,
                        node.technique,
                        it,
                        "cancelled",
                        now,
                        now,
                        0,
                        None,
                        "cancelled: another node failed",
                        None,
                        None,
                        node.group,
                    )
                )
        self._done.clear()

    def failure_error(self) -> NodeExecutionError | None:
        f = self._failure
        if f is None:
            return None
        cause = f.cause
        if isinstance(cause, SibylError) and not isinstance(cause, NodeExecutionError):
            message = cause.message
        else:
            message = _describe(cause)
        return NodeExecutionError(
            message,
            node_id=f.node.id,
            technique=f.node.technique,
            attempts=f.attempts,
            cause=cause,
            iteration=f.iteration,
            path=f.node.path or None,
            line=f.node.line,
        )

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

    def _make_event(self, event_kind: str, node: Node, it: int, **data: Any) -> Event:
        return Event(event_kind, self.run.run_id, node.id, it, time.time(), data)

    def _event(self, event_kind: str, node: Node, it: int, **data: Any) -> None:
        assert self._emit is not None
        self._emit(Event(event_kind, self.run.run_id, node.id, it, time.time(), data))

    def _flush_deferred(self) -> None:
        if self._deferred_events:
            events, self._deferred_events = self._deferred_events, []
            for ev in events:
                self._emit(ev)  # type: ignore[misc]

    def running(self) -> frozenset[str]:
        """Ids of nodes with a call in flight. Safe to call from another thread (a live view polls it)."""
        for _ in range(3):  # the loop thread may add/remove a task while we copy
            try:
                return frozenset(entry[0].id for entry in list(self._tasks.values()))
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
        frontier += [[n.id, list(p)] for n, _, p in self._tasks.values()]
        for q in self._blocked.values():
            frontier += [[n.id, list(p)] for n, p in q]
        frontier += [[n.id, list(p)] for n, p in self._paused]
        if only is not None:
            gn = self.graph.nodes
            picked = [gn[i] for i in only if i in gn]
            return {
                "pending": {n.id: self._pending[n.index] for n in picked},
                "fired": {n.id: list(self._fired[n.index]) for n in picked},
                "runs": {n.id: self._runs[n.index] for n in picked},
                "acts": {n.id: self._acts[n.index] for n in picked},
                "frontier": frontier,
                "stopped_by": self.stopped_by,
            }
        ids = [n.id for n in self._nodes]
        return {
            "pending": dict(zip(ids, self._pending, strict=True)),
            "fired": {i: list(f) for i, f in zip(ids, self._fired, strict=True) if f},
            "runs": dict(zip(ids, self._runs, strict=True)),
            "acts": dict(zip(ids, self._acts, strict=True)),
            "frontier": frontier,
            "stopped_by": self.stopped_by,
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        nodes = self.graph.nodes
        for nid, v in snap.get("pending", {}).items():
            if nid in nodes:
                self._pending[nodes[nid].index] = v
        for nid, v in snap.get("fired", {}).items():
            if nid in nodes:
                self._fired[nodes[nid].index] = list(v)
        for nid, v in snap.get("runs", {}).items():
            if nid in nodes:
                self._runs[nodes[nid].index] = v
        for nid, v in snap.get("acts", {}).items():
            if nid in nodes:
                # the interrupted activation is redone under the same iteration number
                self._acts[nodes[nid].index] = v
        for nid, preds in snap.get("frontier", []):
            node = nodes[nid]
            self._acts[node.index] = self._runs[node.index]
            self._ready.append((node, tuple(preds)))
        stopped = snap.get("stopped_by", "completed")
        self.stopped_by = "completed" if stopped == INTERRUPTED else stopped  # a resume answers the pause


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, SibylError):
        return f"{type(exc).__name__}: {exc.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


Callback = Callable[..., Any]
