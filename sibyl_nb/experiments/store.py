"""Where a sweep lives: ``$SIBYL_HOME/sweeps/<name>/`` with ``manifest.json``, ``cells.jsonl`` and
``steps/`` (the step cache its runs share).

Why JSON lines: every finished cell is appended (and flushed) at once, so a sweep killed midway keeps
every cell that finished, and the next run continues from there; a half-written last line from the
kill is skipped on reading. Nothing is pickled: the files are JSON, the step cache is the JSON-only
store of ``sibyl_nb.stores``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["SweepStore", "MemorySweepStore", "sweep_dir", "check_name"]

log = logging.getLogger("sibyl_nb.experiments")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"sweep name {name!r}: use letters, digits, '_', '-' and '.' (it names a folder under $SIBYL_HOME/sweeps)"
        )
    return name


def sweep_dir(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    if directory is not None:
        return Path(directory)
    from ..paths import sibyl_home

    return sibyl_home("sweeps", check_name(name))


class MemorySweepStore:
    """A sweep that keeps nothing after it returns (``store=False``)."""

    path: Path | None = None

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.manifest: dict[str, Any] | None = None
        self._steps: Any = None

    def step_cache(self) -> Any:
        """This sweep's own in-memory step cache: settings share the nodes they have in common."""
        if self._steps is None:
            from ..stores.factory import open_store

            self._steps = open_store("memory")
        return self._steps

    def load(self) -> None:
        return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest

    def put_cell(self, record: dict[str, Any], metrics: dict[str, Any]) -> None:
        self.cells[record["key"]] = record
        self.metrics[record["key"]] = dict(metrics)

    def put_metrics(self, key: str, metrics: dict[str, Any]) -> None:
        self.metrics.setdefault(key, {}).update(metrics)

    def close(self) -> None:
        return None


class SweepStore(MemorySweepStore):
    """The on-disk sweep: cells appended as they finish, read back by key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh: Any = None

    @property
    def cells_file(self) -> Path:
        assert self.path is not None
        return self.path / "cells.jsonl"

    @property
    def manifest_file(self) -> Path:
        assert self.path is not None
        return self.path / "manifest.json"

    def step_cache(self) -> Any:
        from ..stores.factory import shared_store

        assert self.path is not None
        return shared_store("diskcache", path=str(self.path / "steps"))

    def load(self) -> None:
        """Read every stored cell (the last line of a killed sweep may be cut short: skipped)."""
        self.cells.clear()
        self.metrics.clear()
        if self.manifest_file.exists():
            self.manifest = json.loads(self.manifest_file.read_text(encoding="utf-8"))
        if not self.cells_file.exists():
            return
        with self.cells_file.open("r", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    log.warning(
                        "sweep %s: line %d of cells.jsonl is incomplete (a killed run): skipped", self.path, n
                    )
                    continue
                key = entry.get("key")
                if not isinstance(key, str):
                    continue
                if "record" in entry:
                    self.cells[key] = entry["record"]
                    self.metrics[key] = dict(entry.get("metrics") or {})
                elif "metrics" in entry:
                    self.metrics.setdefault(key, {}).update(entry["metrics"])

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self.manifest = manifest
        tmp = self.manifest_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, default=repr), encoding="utf-8")
        os.replace(tmp, self.manifest_file)

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False, default=repr) + "\n"
        with self._lock:
            if self._fh is None:
                self._fh = self.cells_file.open("a", encoding="utf-8")
                if self._fh.tell() > 0:
                    self._fh.write("\n")  # end a line cut short by a kill, so this one parses
            self._fh.write(line)
            self._fh.flush()  # in the OS now: a killed process loses nothing it finished

    def put_cell(self, record: dict[str, Any], metrics: dict[str, Any]) -> None:
        super().put_cell(record, metrics)
        self._append({"key": record["key"], "record": record, "metrics": metrics})

    def put_metrics(self, key: str, metrics: dict[str, Any]) -> None:
        super().put_metrics(key, metrics)
        self._append({"key": key, "metrics": metrics})

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
