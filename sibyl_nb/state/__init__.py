"""Workflow state, checkpoints (``resume``) and the step cache, all on the shared stores.

Kept import-light: ``sibyl_nb.pipeline`` imports :mod:`sibyl_nb.state.api` for the pipeline methods,
so nothing here may import a store backend, pandas or matplotlib at import time.
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = [
    "StateStore",
    "open_state_store",
    "CheckpointStore",
    "Checkpoint",
    "CheckpointObserver",
    "open_checkpoint_store",
    "StepCache",
    "clear_cache",
    "fingerprint",
    "PipelineStateMixin",
    "settings_extension",
]

_LAZY = {
    "StateStore": ".store",
    "open_state_store": ".store",
    "CheckpointStore": ".checkpoint",
    "Checkpoint": ".checkpoint",
    "CheckpointObserver": ".checkpoint",
    "open_checkpoint_store": ".checkpoint",
    "StepCache": ".cache",
    "clear_cache": ".cache",
    "fingerprint": ".cache",
    "PipelineStateMixin": ".api",
    "settings_extension": ".api",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
