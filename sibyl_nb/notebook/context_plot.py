"""``plot_context_comparison(df)``: the strategy comparison as one readable figure.

Left, fact recall per strategy (and, after a replay, its worst turn); middle, where each strategy's
tokens go, stacked in the token widget's palette; right (after ``replay=True``), recall at every
turn. Labels are shortened to fit; the legend sits below the bars, not on them. matplotlib is
imported when called.
"""

from __future__ import annotations

from typing import Any

from .render import TOKEN_COLORS

__all__ = ["plot_context_comparison", "short_label"]

_PARTS = ("system", "summary", "compressed", "recent", "current", "reserved")


def short_label(label: str, width: int = 28) -> str:
    """``"summary (summary_frequency=10, summary_length=120)"`` -> ``"summary (freq=10, len=120)"``."""
    text = (
        str(label)
        .replace("summary_frequency", "freq")
        .replace("summary_length", "len")
        .replace("compression_ratio", "ratio")
        .replace("compression_method", "method")
        .replace("keep_recent", "keep")
        .replace("window_size", "size")
    )
    return text if len(text) <= width else text[: width - 1] + "…"


def plot_context_comparison(df: Any, *, figsize: tuple[float, float] | None = None) -> Any:
    """A matplotlib Figure for a :func:`~sibyl_nb.compare_context_strategies` DataFrame."""
    import matplotlib.pyplot as plt

    replay = df.attrs.get("replay")
    panels = 3 if replay is not None and len(replay) else 2
    labels = [short_label(s) for s in df.index]
    n = len(labels)
    fig, axes = plt.subplots(
        1,
        panels,
        figsize=figsize or (4.2 * panels + 1.5, 0.55 * n + 2.2),
        squeeze=False,
        layout="constrained",
    )
    axes = axes[0]
    y = list(range(n))[::-1]
    ax = axes[0]
    recall = [0.0 if v is None else float(v) for v in df["recall"]]
    ax.barh(y, recall, height=0.6, color=TOKEN_COLORS["recent"], label="recall (end)")
    if "replay_recall_min" in df:
        worst = [0.0 if v is None else float(v) for v in df["replay_recall_min"]]
        ax.scatter(worst, y, color=TOKEN_COLORS["reserved"], zorder=3, label="worst turn")
    for yi, v in zip(y, recall, strict=True):
        ax.text(
            min(v + 0.02, 0.98), yi, f"{v:.0%}", va="center", ha="left" if v < 0.9 else "right", fontsize=9
        )
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of facts sent")
    ax.set_title("Fact recall")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False, fontsize=8)

    ax = axes[1]
    left = [0.0] * n
    for part in _PARTS:
        vals = [float(v) for v in df[f"alloc_{part}"]]
        ax.barh(y, vals, left=left, height=0.6, color=TOKEN_COLORS[part], label=part)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_yticks(y, [""] * n)
    ax.set_xlim(0, float(df["max_tokens"].max()))
    ax.set_xlabel("tokens (budget = axis end)")
    ax.set_title("Where the tokens go")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False, fontsize=8)

    if panels == 3:
        ax = axes[2]
        palette = [
            TOKEN_COLORS[k] for k in ("recent", "summary", "compressed", "system", "current", "reserved")
        ]
        for i, (name, rows) in enumerate(replay.groupby("strategy", sort=False)):
            ax.plot(
                rows["turn"],
                rows["recall"],
                marker="o",
                ms=3,
                color=palette[i % len(palette)],
                label=short_label(name),
            )
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("turn")
        ax.set_title("Recall at every turn")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False, fontsize=8)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    return fig
