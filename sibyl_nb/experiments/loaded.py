"""A stored sweep brought back (``sb.load_sweep(name)``): its frame rebuilt from the manifest and cells."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import SweepNotFoundError
from .frame import Cell, build_frame, cell_key, env_key
from .store import SweepStore, sweep_dir

__all__ = ["load", "StoredMetric", "cells_of"]


@dataclass(frozen=True)
class StoredMetric:
    """A metric as the manifest names it: enough to find its stored values."""

    name: str
    key: str


def cells_of(manifest: dict[str, Any]) -> list[Cell]:
    """The sweep's cells, with the keys the run stored them under (recomputed from the manifest)."""
    env = env_key(manifest["providers"], manifest["techniques"])
    seed = manifest["seed"]
    return [
        Cell(i, inp, s, r, cell_key(env, s["hash"], inp, r, seed))
        for i, inp in enumerate(manifest["inputs"])
        for s in manifest["settings"]
        for r in range(manifest["repeats"])
    ]


def load(name: str, directory: str | os.PathLike[str] | None = None) -> Any:
    path = sweep_dir(name, directory)
    store = SweepStore(path) if path.exists() else None
    if store is None or not store.manifest_file.exists():
        raise SweepNotFoundError(f"no stored sweep '{name}' at {path}")
    store.load()
    manifest = store.manifest
    assert manifest is not None
    if manifest.get("format") != "sibyl_nb.sweep/1":
        raise SweepNotFoundError(
            f"{store.manifest_file}: not a sibyl_nb sweep manifest (format {manifest.get('format')!r})"
        )
    metrics = [StoredMetric(m["name"], m["key"]) for m in manifest["metrics"]]
    frame = build_frame(cells_of(manifest), store.cells, store.metrics, metrics, manifest["fields"])
    frame.attrs["sibyl_sweep"] = {"name": manifest["name"], "path": str(path)}
    return frame
