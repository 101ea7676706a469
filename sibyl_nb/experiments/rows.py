"""A sweep frame's row -> its sweep (manifest, store) and its :class:`RunResult`: what the ``df.sibyl``
accessor and ``diff_runs`` both read, below either of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, SweepNotFoundError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["IN_MEMORY", "sweep_of", "result_of_row"]

IN_MEMORY: dict[str, Any] = {}  # store-less sweeps of this process, by name (for df.sibyl.result)


def sweep_of(attrs: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """(manifest, store) of the sweep a frame or row came from."""
    info = attrs.get("sibyl_sweep")
    if not info:
        raise ConfigError("this frame does not come from sb.sweep / sb.load_sweep (no sweep attached)")
    if info.get("path") is None:
        run = IN_MEMORY.get(info["name"])
        if run is None:
            raise SweepNotFoundError(f"sweep '{info['name']}' kept nothing (store=False) and is gone")
        return run.manifest, run.store
    from .store import SweepStore

    store = SweepStore(info["path"])
    store.load()
    if store.manifest is None:
        raise SweepNotFoundError(f"no sweep manifest at {info['path']}")
    return store.manifest, store


def result_of_row(row: pd.Series, attrs: Mapping[str, Any] | None = None) -> Any:
    """The :class:`RunResult` of a sweep row, rebuilt from the stored record (with its node configs)."""
    from .cell import result_from_record

    manifest, store = sweep_of(attrs if attrs is not None else row.attrs)
    run_id = row.get("run_id")
    record = next((r for r in store.cells.values() if r.get("run_id") == run_id), None)
    if record is None:
        raise ConfigError(f"run {run_id!r} is not in sweep '{manifest['name']}'")
    result = result_from_record(
        record, pipeline=manifest["pipeline"], input=manifest["inputs"][int(row["input_id"])]
    )
    result._sibyl_nodes = manifest["settings"][int(row["setting"])]["nodes"]  # type: ignore[attr-defined]
    return result
