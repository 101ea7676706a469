"""Stored cells -> the sweep's DataFrame (pandas is imported here, when a frame is built)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .grid import canonical, digest

__all__ = ["Cell", "build_frame", "field_value", "cell_key", "env_key", "METRIC_ERROR", "KEY_VERSION"]

METRIC_ERROR = "__error__"
KEY_VERSION = 1


def env_key(providers: Mapping[str, Any], techniques: Mapping[str, Any]) -> str:
    """What every cell of a sweep shares: the providers' settings and the techniques' code."""
    return digest({"v": KEY_VERSION, "providers": providers, "techniques": techniques}, 12)


def cell_key(env: str, setting_hash: str, input: Any, repeat: int, seed: int) -> str:
    """A cell's identity: same key = same definition, providers, code, input, repeat and seed."""
    return digest({"env": env, "setting": setting_hash, "input": input, "repeat": repeat, "seed": seed}, 32)


@dataclass
class Cell:
    """One (input, setting, repeat) of a sweep and the key its record is stored under."""

    input_id: int
    input: Any
    setting: Any  # grid.Setting (or, for a loaded sweep, a dict with index/params/hash)
    repeat: int
    key: str

    @property
    def params(self) -> dict[str, Any]:
        s = self.setting
        return s["params"] if isinstance(s, Mapping) else s.params

    @property
    def setting_index(self) -> int:
        s = self.setting
        return s["index"] if isinstance(s, Mapping) else s.index


def field_value(record: Mapping[str, Any], path: str) -> Any:
    """``answer`` reads the final output's field; ``node.field`` a node's output (dotted paths)."""
    from .metrics import field_value as value_at

    return value_at(record.get("output"), record.get("outputs"), path)


def _input_label(value: Any) -> str:
    from ..techniques.context import query_of

    q = query_of(value)
    return q if q else (value if isinstance(value, str) else canonical(value))


def _scalar(value: Any) -> Any:
    """Cells hold scalars; lists and mappings become canonical JSON text (so parquet/csv can hold them)."""
    if isinstance(value, (Mapping, list, tuple)):
        return canonical(value)
    return value


def row_of(cell: Cell, record: Mapping[str, Any], metric_values: Mapping[str, Any], metrics: list[Any],
           fields: list[str]) -> dict[str, Any]:  # fmt: skip
    from ..engine.result import text_of

    row: dict[str, Any] = {
        "input_id": cell.input_id,
        "input": _input_label(cell.input),
        "repeat": cell.repeat,
    }
    for k, v in cell.params.items():
        row[k] = _scalar(v)
    row["output"] = text_of(record.get("output")) if record.get("output") is not None else None
    for f in fields:
        row[f] = _scalar(field_value(record, f))
    errors = []
    for m in metrics:
        value = metric_values.get(m.key)
        if isinstance(value, Mapping) and METRIC_ERROR in value:
            errors.append(f"metric {m.name}: {value[METRIC_ERROR]}")
            value = None
        if isinstance(value, Mapping):
            for k, v in value.items():
                row[f"{m.name}.{k}"] = _scalar(v)
        else:
            row[m.name] = value
    row["status"] = record.get("status")
    error = record.get("error")
    if errors:
        error = "; ".join(([error] if error else []) + errors)
    row["error"] = error
    row["latency_ms"] = float(record.get("duration") or 0.0) * 1000.0
    row["tokens_in"] = record.get("tokens_in", 0)
    row["tokens_out"] = record.get("tokens_out", 0)
    row["cache_hits"] = record.get("cache_hits", 0)
    seen: set[str] = set()
    for s in record.get("steps") or []:
        if s.get("status") in ("ran", "cached", "failed") and s.get("fallback_for") is None:
            col = f"time_ms.{s['node_id']}"
            ms = max(float(s.get("ended") or 0) - float(s.get("started") or 0), 0.0) * 1000.0
            row[col] = row.get(col, 0.0) + ms if s["node_id"] in seen else ms
            seen.add(s["node_id"])
    row["run_id"] = record.get("run_id")
    row["setting"] = cell.setting_index
    return row


def build_frame(cells: list[Cell], records: Mapping[str, Any], metric_values: Mapping[str, Any],
                metrics: list[Any], fields: list[str]) -> Any:  # fmt: skip
    """One row per cell that has a record, in (input, setting, repeat) order."""
    import pandas as pd

    from . import accessor  # noqa: F401  (registers df.sibyl, now that pandas is in)

    rows = [
        row_of(c, records[c.key], metric_values.get(c.key, {}), metrics, fields)
        for c in cells
        if c.key in records
    ]
    frame = pd.DataFrame(rows)
    if rows:  # step timing columns last, in a stable order
        timing = [c for c in frame.columns if c.startswith("time_ms.")]
        head = [c for c in frame.columns if not c.startswith("time_ms.") and c not in ("run_id", "setting")]
        frame = frame[head + timing + ["run_id", "setting"]]
    return frame
