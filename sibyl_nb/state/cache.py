"""Step cache: a node whose technique, rendered config and inputs were seen before is served from the
cache and marked ``cached`` instead of running.

Key: the rendered ``cache_key_template`` (seed default ``workflow:${workflow_id}:${step_name}``,
rendered in the node's scope) plus ``#`` and a sha256 fingerprint of the technique, the rendered
config, the pipeline input, the upstream outputs, session and state. The template groups entries the
way a user thinks of them; the fingerprint makes a hit safe (changed input = a miss, never a stale
answer).

A run that was not given a ``workflow_id`` gets a random one, so ``${workflow_id}`` renders as the
pipeline name then: re-running a pipeline in a notebook hits the cache, as a user expects.

Values are JSON (never pickle); an output that is not JSON is simply not cached. Engine techniques
with side effects on the run (``workflow_orchestration.*``: sessions, context, state) are never
cached, nor is a node with ``cache: false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..document.expressions import MISSING
from ..document.templates import compile_value
from ..engine.events import Event, Observer
from ..engine.scope import resolver_for
from ..errors import SibylError
from ..stores.base import Store
from .settings import open_kind_store

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline import RunState

__all__ = ["StepCache", "DEFAULT_TEMPLATE", "fingerprint", "open_cache_store", "clear_cache"]

log = logging.getLogger("sibyl_nb.cache")

DEFAULT_TEMPLATE = "workflow:${workflow_id}:${step_name}"
NEVER_CACHED_SHOPS = ("workflow_orchestration.",)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def fingerprint(
    technique: str, config: Any, input: Any, upstream: Any, session: Any = None, state: Any = None
) -> str:
    """sha256 over everything a step's output may depend on (canonical JSON; odd objects by repr)."""
    h = hashlib.sha256()
    for part in (technique, config, input, upstream, session or {}, state or {}):
        h.update(_canon(part).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def open_cache_store(config: Mapping[str, Any] | None = None) -> Store:
    """The cache's store: diskcache under ``$SIBYL_HOME/cache`` unless ``storage:`` says otherwise."""
    return open_kind_store("cache", config)


def clear_cache(
    config: Mapping[str, Any] | None = None, *, pipeline: str | None = None, prefix: str = ""
) -> int:
    """Delete cached step outputs (all, those of ``pipeline``, or keys starting with ``prefix``);
    returns how many entries went."""
    store = open_cache_store(config)
    n = 0
    for key in store.kv_keys(prefix):
        if pipeline is not None:
            value = store.kv_get(key)
            if not isinstance(value, dict) or value.get("pipeline") != pipeline:
                continue
        n += int(store.kv_delete(key))
    return n


class StepCache(Observer):
    """One run's cache: ``before_node`` is the scheduler hook; ``on_node_finished`` writes behind."""

    def __init__(
        self, store: Store, run: RunState, *, ttl: float | None = None, template: str | None = None
    ) -> None:
        self.store = store
        self.run = run
        self.ttl = None if ttl in (None, 0, "") else float(ttl)
        self.template = template or DEFAULT_TEMPLATE
        self._render, _ = compile_value(self.template, "caching.cache_key_template")
        self._pending: dict[tuple[str, int], str] = {}
        self.hits = 0
        self.misses = 0
        given = run.workflow_id != run.run_id
        self._workflow = run.workflow_id if given else run.pipeline.name

    # ---------------------------------------------------------------- hook
    def cacheable(self, node: Any) -> bool:
        if node.cache is not None:
            return bool(node.cache)
        return not node.technique.startswith(NEVER_CACHED_SHOPS)

    def key_for(self, node: Any, ctx: Any) -> str:
        base = resolver_for(self.run, node.id, ctx)
        workflow = self._workflow

        def resolve(ref: Any) -> Any:
            if not ref.fields:
                if ref.root == "workflow_id":
                    return workflow
                if ref.root == "pipeline":
                    return self.run.pipeline.name
                if ref.root == "technique":
                    return node.technique
                if ref.root in ("step_name", "node_id"):
                    return node.id
            return base(ref)

        head = self._render(resolve) if self._render is not None else self.template
        run = self.run
        config = ctx.config
        from ..engine.fanout import NO_ITEM, item_of

        item = item_of(run, node.id)
        if item is not NO_ITEM:  # a for_each item: its item is part of what its output depends on
            config = {"config": config, "for_each_item": item}
        fp = fingerprint(node.technique, config, run.input, ctx.upstream, run.session, run.state)
        return f"{head}#{fp[:32]}"

    def before_node(self, node: Any, ctx: Any) -> Any:
        if not self.cacheable(node):
            return MISSING
        try:
            key = self.key_for(node, ctx)
            hit = self.store.kv_get(key)
        except SibylError as exc:
            log.warning("step cache: node %r not cached: %s", node.id, exc)
            return MISSING
        if isinstance(hit, dict) and "output" in hit:
            self.hits += 1
            return hit["output"]
        self.misses += 1
        self._pending[(node.id, ctx.iteration)] = key
        return MISSING

    # ---------------------------------------------------------------- write-behind (observer)
    def on_node_finished(self, ev: Event) -> None:
        if ev.data.get("fallback_for"):
            return
        key = self._pending.pop((ev.node_id, ev.iteration), None)  # type: ignore[arg-type]
        if key is None:
            return
        entry = {
            "output": ev.data.get("output"),
            "pipeline": self.run.pipeline.name,
            "node": ev.node_id,
            "technique": ev.data.get("technique"),
            "created_at": time.time(),
        }
        try:
            self.store.kv_put(key, entry, ttl=self.ttl)
        except SibylError as exc:  # not JSON, or the store is down: the run goes on uncached
            log.debug("step cache: output of %r not cached: %s", ev.node_id, exc)
