"""``workflow_orchestration.state_management``: load the workflow's state into ``ctx.state`` when the
step runs, save it back when the run succeeds.

The save is a merge (atomic on every backend), not an overwrite, so keys another process updated
meanwhile with ``update_state`` survive; keys this run wrote win. A failed run saves nothing: state
that a half-finished run left behind is exactly what checkpoints, not state, are for.
"""

from __future__ import annotations

from typing import Any

from ..document.schema import NUMBER, ConfigSchema, Field
from ..stores.factory import STORAGE_NAMES
from ..techniques.context import StepContext
from ..techniques.registry import register_technique
from .settings import STATE_TECHNIQUE
from .store import open_state_store

__all__ = ["state_management", "CONFIG_SCHEMA"]

_STORAGES = tuple(sorted(STORAGE_NAMES))
CONFIG_SCHEMA = ConfigSchema(
    {
        "backend": Field(_STORAGES, "where state lives (same as storage)"),
        "storage": Field(_STORAGES, "where state lives (default: diskcache)"),
        "redis_url": Field(str, "Redis URL (storage: redis)", access="url"),
        "database_url": Field(str, "SQLAlchemy URL (storage: database)", access="url"),
        "path": Field(str, "diskcache directory", access="store"),
        "namespace": Field(str, "key namespace"),
        "ttl": Field(NUMBER, "seconds before stored state expires", exclusive_minimum=0),
        "workflow_id": Field(str, "whose state (default: the run's workflow id)"),
        "load": Field(bool, "load state when the step runs", default=True),
        "save": Field(bool, "merge state back when the run succeeds", default=True),
        "deep_merge": Field(bool, "merge nested mappings key by key", default=False),
    },
    description="load the workflow's state when the step runs, save it back when the run succeeds",
)


async def state_management(ctx: StepContext) -> dict[str, Any]:
    """Load ``state`` for ``config.workflow_id`` (default: the run's workflow id) into ``ctx.state``;
    defer a merge of ``ctx.state`` back into the store until the run has succeeded."""
    cfg = dict(ctx.config)
    store = open_state_store(cfg)
    workflow_id = str(cfg.get("workflow_id") or ctx.workflow_id)
    run_state = ctx.state
    loaded: dict[str, Any] = {}
    if cfg.get("load", True):
        found = await store.load(workflow_id)
        if isinstance(found, dict):
            loaded = found
            # values this run already produced (e.g. restored from a checkpoint) win over stored ones
            for key, value in loaded.items():
                run_state.setdefault(key, value)
    if cfg.get("save", True):
        deep = bool(cfg.get("deep_merge", False))

        async def save(_result: Any) -> None:
            await store.merge(workflow_id, run_state, deep=deep)

        ctx.defer(save)
    return {
        "workflow_id": workflow_id,
        "backend": store.backend,
        "loaded": sorted(loaded),
        "state": dict(run_state),
    }


register_technique(
    STATE_TECHNIQUE,
    state_management,
    config_schema=CONFIG_SCHEMA,
    outputs=("workflow_id", "backend", "loaded", "state"),
)
