"""The seed's state API on the pipeline object, ``resume``, checkpoint housekeeping, and the run
extension that attaches checkpointing, caching, logging and metrics from a document's settings.

``Pipeline`` inherits :class:`PipelineStateMixin`; ``settings_extension`` is in
``pipeline.RUN_EXTENSIONS``. This module is imported by ``sibyl_nb.pipeline``, so it imports nothing
heavy (and nothing from ``pipeline``) at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import CheckpointNotFoundError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from datetime import timedelta

    from ..engine.events import Event
    from ..engine.result import RunResult
    from ..pipeline import Pipeline, RunState
    from .checkpoint import Checkpoint, CheckpointStore
    from .history import CheckpointInfo
    from .store import StateStore

__all__ = ["PipelineStateMixin", "settings_extension"]

_SETTING_KEYS = ("checkpointing", "caching", "logging", "metrics", "state")
_NO_VALUE: Any = object()  # resume() without value= (None is a valid answer)


class PipelineStateMixin:
    """State (``save_state`` / ``load_state`` / ``update_state``), checkpoints (``resume``, list,
    prune) and the step cache (``clear_cache``) for a :class:`~sibyl_nb.pipeline.Pipeline`."""

    spec: Any
    document: Any

    if TYPE_CHECKING:  # what the mixin uses of Pipeline, declared for the checker only

        @property
        def name(self) -> str: ...

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
        ) -> RunResult: ...

    # ---------------------------------------------------------------- settings
    def configure(self, **settings: Any) -> Any:
        """Override the document's settings for this pipeline object, e.g. ``configure(caching=True)``,
        ``configure(checkpointing={"storage": "database", "frequency": 1})``, ``configure(state=
        {"backend": "redis"})``. ``False``/``None`` switches a section off. Returns the pipeline."""
        unknown = sorted(set(settings) - set(_SETTING_KEYS))
        if unknown:
            from ..errors import ConfigError

            raise ConfigError(
                f"configure(): unknown setting(s) {', '.join(unknown)} (known: {', '.join(_SETTING_KEYS)})"
            )
        current = dict(getattr(self, "_sibyl_settings", None) or {})
        current.update(settings)
        self._sibyl_settings = current
        return self

    def settings(self) -> dict[str, Any]:
        """The effective checkpointing / caching / logging / metrics settings of this pipeline."""
        from .settings import pipeline_settings

        return pipeline_settings(self)

    # ---------------------------------------------------------------- state
    def state_store(self) -> StateStore:
        """The store behind ``save_state`` & co: the ``state_management`` step's backend, or diskcache."""
        from .settings import state_config_of
        from .store import open_state_store

        return open_state_store(state_config_of(self))

    async def save_state(self, workflow_id: str, state: Mapping[str, Any]) -> None:
        """Store ``state`` (a JSON dict) as the whole state of ``workflow_id``."""
        await self.state_store().save(workflow_id, state)

    async def load_state(self, workflow_id: str, default: Any = None) -> Any:
        """The state saved for ``workflow_id``, or ``default`` (None) when there is none."""
        return await self.state_store().load(workflow_id, default)

    async def update_state(
        self,
        workflow_id: str,
        updates: Mapping[str, Any] | None = None,
        *,
        fn: Callable[[dict[str, Any]], Any] | None = None,
        deep: bool = False,
    ) -> dict[str, Any]:
        """Atomically merge ``updates`` into the state (``deep=True`` merges nested dicts), or apply
        ``fn(state)`` (e.g. to increment a counter); returns the new state. Concurrent updaters never
        lose each other's changes."""
        store = self.state_store()
        if fn is not None:
            if updates:
                patch = dict(updates)
                inner = fn

                def fn(cur: dict[str, Any]) -> Any:  # noqa: F811 - wraps the caller's fn
                    out = inner(cur)
                    cur = cur if out is None else out
                    cur.update(patch)
                    return cur

            return await store.update(workflow_id, fn)
        return await store.merge(workflow_id, updates or {}, deep=deep)

    async def delete_state(self, workflow_id: str) -> bool:
        return await self.state_store().delete(workflow_id)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_store(self) -> CheckpointStore:
        """Where this pipeline's checkpoints go (``shops.infrastructure.config.checkpointing``)."""
        from .checkpoint import open_checkpoint_store
        from .settings import render_env

        cfg = self.settings().get("checkpointing") or {}
        return open_checkpoint_store(render_env(cfg))

    def load_checkpoint(self, workflow_id: str) -> Checkpoint | None:
        """The latest checkpoint of ``workflow_id`` (folded), or None."""
        return self.checkpoint_store().load(workflow_id)

    async def resume(
        self,
        workflow_id: str,
        *,
        checkpoint: Any = None,
        updates: Mapping[str, Any] | None = None,
        fork_id: str | None = None,
        value: Any = _NO_VALUE,
        node: str | None = None,
        observers: Iterable[Any] = (),
        hooks: Iterable[Any] = (),
    ) -> RunResult:
        """Continue the run of ``workflow_id`` from its latest checkpoint: completed steps are not run
        again, the frontier (steps that were ready or running) runs, loops continue at their
        iteration. A finished workflow returns its result without running anything.

        With ``checkpoint`` (a step number or an entry of :meth:`history`) and/or ``updates`` (node id
        -> edited output; ``"state"`` -> merged into the run state), this *forks*: a new workflow
        (``fork_id``, or a generated id: ``result.workflow_id``) starts from that checkpoint with the
        edits and runs on; the original workflow is left as it was.

        With ``value``, answers a run paused by ``ctx.interrupt``: the waiting node (``node``, needed
        only when several wait) runs again and its ``ctx.interrupt`` call returns ``value``. Without a
        checkpoint store, a run paused in this process resumes from memory."""
        import asyncio

        store = self.checkpoint_store()
        slow = store.store.backend in ("redis", "sql")
        if checkpoint is not None or updates:
            from .history import ForkOverrides, plan_fork

            args = (store, self.spec.graph, workflow_id, -1 if checkpoint is None else checkpoint, updates)
            fork = (
                await asyncio.to_thread(plan_fork, *args, fork_id=fork_id)
                if slow
                else plan_fork(*args, fork_id=fork_id)
            )
            meta = store.meta(fork.workflow_id) if fork.restore is not None else store.meta(workflow_id)
            edits = ForkOverrides(fork)
            return await self.execute(
                (meta or {}).get("input"),
                workflow_id=fork.workflow_id,
                restore=fork.restore,
                observers=(edits, *observers),
                hooks=(edits, *hooks),
            )
        paused = getattr(self, "_paused", {}).get(workflow_id)
        ck = self.settings().get("checkpointing")
        cp = None
        if paused is None or (ck is not None and ck.get("enabled", True)):
            cp = await asyncio.to_thread(store.load, workflow_id) if slow else store.load(workflow_id)
        if cp is None and paused is None:
            raise CheckpointNotFoundError(
                f"no checkpoint for workflow '{workflow_id}' in {store.url}: was the run started "
                f"with checkpointing enabled and the same storage settings?"
            )
        if cp is not None:
            if cp.pipeline and cp.pipeline != self.name:
                raise CheckpointNotFoundError(
                    f"workflow '{workflow_id}' was checkpointed by pipeline '{cp.pipeline}', not '{self.name}'"
                )
            # a run that died before its first checkpointed step starts over (with the same ids)
            restore, inputs, run_id = (cp.restore if cp.steps else None), cp.input, cp.run_id or None
        else:
            assert paused is not None
            restore, inputs, run_id = paused, paused.get("input"), paused.get("run_id")
        if value is not _NO_VALUE:
            from ..engine.interrupt import answers_for

            if restore is None:
                raise ConfigError(f"resume(value=...): workflow '{workflow_id}' is not waiting for input")
            restore = {**restore, "answers": answers_for(restore.get("records", []), node, value)}
        return await self.execute(
            inputs,
            workflow_id=workflow_id,
            run_id=run_id,
            restore=restore,
            observers=observers,
            hooks=hooks,
        )

    def resume_sync(self, workflow_id: str, **kwargs: Any) -> RunResult:
        """Synchronous :meth:`resume` (also inside a running loop, e.g. a notebook cell)."""
        from ..engine.sync import run_sync

        return run_sync(self.resume(workflow_id, **kwargs))

    async def history(self, workflow_id: str) -> list[CheckpointInfo]:
        """Every checkpoint of ``workflow_id``, oldest first (step, node, iteration, time, frontier):
        any of them can be passed to ``resume(workflow_id, checkpoint=..., updates=...)``."""
        import asyncio

        from .history import history

        store = self.checkpoint_store()
        if store.store.backend in ("redis", "sql"):
            rows = await asyncio.to_thread(history, store, workflow_id)
        else:
            rows = history(store, workflow_id)
        meta = store.meta(workflow_id) or {}
        if meta.get("pipeline") and meta["pipeline"] != self.name:
            raise CheckpointNotFoundError(
                f"workflow '{workflow_id}' was checkpointed by pipeline '{meta['pipeline']}', not '{self.name}'"
            )
        return rows

    def history_sync(self, workflow_id: str) -> list[CheckpointInfo]:
        """Synchronous :meth:`history`."""
        from ..engine.sync import run_sync

        return run_sync(self.history(workflow_id))

    def list_checkpoints(self, *, all_pipelines: bool = False) -> list[dict[str, Any]]:
        """Checkpointed workflows (this pipeline's, or every pipeline's), newest first."""
        rows = self.checkpoint_store().list()
        return rows if all_pipelines else [r for r in rows if r["pipeline"] == self.name]

    def prune_checkpoints(
        self,
        *,
        keep: int | None = None,
        older_than: float | timedelta | None = None,
        status: str | None = None,
        all_pipelines: bool = False,
    ) -> dict[str, int]:
        """Delete old checkpoints: keep the ``keep`` newest workflows and/or drop those not updated for
        ``older_than`` (seconds or timedelta), optionally only with ``status`` (e.g. "finished").
        Leftovers of superseded runs are always removed. Returns ``{"workflows", "entries"}``."""
        return self.checkpoint_store().prune(
            keep=keep, older_than=older_than, status=status, pipeline=None if all_pipelines else self.name
        )

    def delete_checkpoint(self, workflow_id: str) -> int:
        return self.checkpoint_store().delete(workflow_id)

    # ---------------------------------------------------------------- cache
    def clear_cache(self, *, all_pipelines: bool = False) -> int:
        """Delete this pipeline's cached step outputs (or every pipeline's); returns how many."""
        from .cache import clear_cache
        from .settings import render_env

        cfg = dict(self.settings().get("caching") or {})
        cfg.pop("cache_key_template", None)
        return clear_cache(render_env(cfg), pipeline=None if all_pipelines else self.name)


def settings_extension(pipeline: Pipeline, run: RunState) -> tuple[list[Any], list[Any]]:
    """``RUN_EXTENSIONS`` entry: observers/hooks for checkpointing, caching, logging and metrics."""
    doc = pipeline.document
    if not doc.infrastructure and not doc.observability and not getattr(pipeline, "_sibyl_settings", None):
        return [], []
    from .settings import pipeline_settings, render_env

    settings = pipeline_settings(pipeline)
    observers: list[Any] = []
    hooks: list[Any] = []
    ck = settings.get("checkpointing")
    if ck is not None and ck.get("enabled", True):
        from .checkpoint import CheckpointObserver, open_checkpoint_store

        cfg = render_env(ck)
        observers.append(
            CheckpointObserver(
                open_checkpoint_store(cfg), run, frequency=cfg.get("frequency") or 1, keep=cfg.get("keep")
            )
        )
    ca = settings.get("caching")
    if ca is not None and ca.get("enabled", True):
        from .cache import StepCache, open_cache_store

        cfg = dict(ca)
        template = cfg.pop("cache_key_template", None)
        cfg = render_env(cfg)
        cache = StepCache(open_cache_store(cfg), run, ttl=cfg.get("ttl"), template=template)
        hooks.append(cache)
        observers.append(cache)
    lg = settings.get("logging")
    if lg is not None:
        from ..observe.log import LoggingObserver

        observers.append(LoggingObserver.from_settings(run, lg))
    mt = settings.get("metrics")
    if mt is not None:
        from ..observe.metrics import MetricsObserver

        observers.append(MetricsObserver.from_settings(run, mt))
    return observers, hooks
