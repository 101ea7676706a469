"""``df.sibyl``: the pandas accessor on sweep frames — metric-by-parameter plots, a row's run, diffs.

Registered when this module is imported, which sibyl_nb does only when it builds a sweep frame
(``sweep``, ``load_sweep``): ``import sibyl_nb`` never imports pandas. matplotlib is imported only by
``plot``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..errors import ConfigError, SibylError
from .rows import result_of_row, sweep_of

__all__ = ["SibylAccessor", "label_of", "RUN_COLUMNS"]

RUN_COLUMNS = ("input_id", "input", "repeat", "output", "status", "error", "latency_ms", "tokens_in",
               "tokens_out", "cache_hits", "run_id", "setting")  # fmt: skip


def label_of(column: str) -> str:
    """``generate.config.temperature`` -> ``generate · temperature`` (axis and legend labels)."""
    if ".config." in column:
        node, key = column.split(".config.", 1)
        return f"{node} · {key}"
    if "." in column:  # a field of a node's output: context.tokens_used -> context · tokens used
        node, key = column.split(".", 1)
        return f"{node} · {key.replace('_', ' ')}"
    return column.replace("_", " ")


@pd.api.extensions.register_dataframe_accessor("sibyl")
class SibylAccessor:
    """``df.sibyl.plot(...)``, ``df.sibyl.result(i)``, ``df.sibyl.diff(i, j)``, ``df.sibyl.manifest``."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._df = frame

    @property
    def manifest(self) -> dict[str, Any]:
        return sweep_of(self._df.attrs)[0]

    @property
    def params(self) -> list[str]:
        """The grid parameter columns."""
        try:
            grid = list(self.manifest["grid"])
        except SibylError:
            grid = [c for c in self._df.columns if ".config." in str(c)]
        return [c for c in grid if c in self._df.columns]

    def metrics(self) -> list[str]:
        """Numeric or boolean columns that are neither parameters nor run facts nor step timings."""
        skip = set(self.params) | set(RUN_COLUMNS)
        out = []
        for c in self._df.columns:
            if c in skip or str(c).startswith("time_ms."):
                continue
            s = self._df[c]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                out.append(c)
        return out

    def result(self, i: int) -> Any:
        """The run of row ``i`` (position) as a RunResult, with its outputs and step records."""
        return result_of_row(self._df.iloc[i], self._df.attrs)

    def diff(self, i: int, j: int) -> Any:
        """:func:`sibyl_nb.diff_runs` of rows ``i`` and ``j`` (positions)."""
        from .diff import diff_runs

        return diff_runs(self.result(i), self.result(j))

    def summary(
        self, metric: str | Sequence[str] | None = None, by: str | Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Mean of each metric per parameter combination (the table behind :meth:`plot`)."""
        metrics = [metric] if isinstance(metric, str) else list(metric or self.metrics())
        by = [by] if isinstance(by, str) else list(by or self.params)
        if not by:
            return self._df[metrics].astype(float).mean().to_frame("mean").T
        return self._df.groupby(by, sort=False)[metrics].agg(lambda s: s.astype(float).mean())

    def plot(
        self,
        metric: str | Sequence[str] | None = None,
        by: str | None = None,
        hue: str | None = None,
        *,
        kind: str = "bar",
        ax: Any = None,
        figsize: tuple[float, float] | None = None,
    ) -> Any:
        """Mean of ``metric`` (every metric column by default: one panel each) by grid parameter ``by``
        (default: the first), one series per value of ``hue`` (default: the second parameter), with the
        spread over inputs and repeats as error bars. ``kind``: ``bar``, ``line`` or ``box``. Labels
        name the node and key (``generate · temperature``). Returns the matplotlib Axes (an array of
        them for several metrics)."""
        import matplotlib.pyplot as plt

        if kind not in ("bar", "line", "box"):
            raise ConfigError(f"plot kind must be bar, line or box, got {kind!r}")
        df = self._df
        metrics = [metric] if isinstance(metric, str) else list(metric or self.metrics())
        if not metrics:
            raise ConfigError("nothing to plot: the frame has no metric column")
        params = self.params
        by = by or (params[0] if params else "input")
        if hue is None and len(params) > 1:
            hue = next(p for p in params if p != by)
        for col in [*metrics, by, *([hue] if hue else [])]:
            if col not in df.columns:
                raise ConfigError(f"plot: no column {col!r} (columns: {', '.join(map(str, df.columns))})")
        if ax is not None and len(metrics) > 1:
            raise ConfigError("plot: pass ax= for one metric only")
        if ax is None:
            fig, grid = plt.subplots(
                1, len(metrics), figsize=figsize or (4.8 * len(metrics), 3.6), squeeze=False
            )
            axes = list(grid[0])
        else:
            axes = [ax]
        for a, m in zip(axes, metrics, strict=True):
            values = df[m].astype(float)
            data = df.assign(**{m: values})
            if kind == "box":
                groups = [(str(k), g[m].dropna().to_numpy()) for k, g in data.groupby(by, sort=False)]
                a.boxplot([g for _, g in groups], tick_labels=[k for k, _ in groups])
            else:
                keys = [by, hue] if hue else [by]
                stats = data.groupby(keys, sort=False)[m].agg(["mean", "std"])
                mean, err = stats["mean"], stats["std"].fillna(0.0)
                if hue:
                    mean, err = mean.unstack(hue), err.unstack(hue)
                    mean.columns = [f"{v}" for v in mean.columns]
                    err.columns = mean.columns
                mean.index = [str(v) for v in mean.index]
                err.index = mean.index
                if kind == "bar":
                    mean.plot.bar(ax=a, yerr=err, rot=0, capsize=3)
                else:
                    mean.plot(ax=a, yerr=err, marker="o", capsize=3)
                if hue:
                    a.legend(title=label_of(hue), fontsize="small")
            a.set_xlabel(label_of(by))
            a.set_ylabel(label_of(m))
            a.set_title(f"{label_of(m)} by {label_of(by)}")
        if ax is None:
            axes[0].figure.tight_layout()
        return axes[0] if len(axes) == 1 else axes
