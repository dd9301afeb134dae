"""Static PNGs of the pipeline's plot data, for reports that must render where no JavaScript runs (PR comments).

`dvc plots` renders Vega-Lite HTML; a pull-request comment needs plain images, so the report draws the same
CSV plot data with matplotlib (Agg backend, imported only when a plot is drawn: it costs about a second).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

MAX_POINTS = 2000  # a scatter of the whole holdout is slow to draw and no easier to read


def read_plot_csv(text: str | None) -> pd.DataFrame | None:
    """Parse plot data given as text (a file's content at some revision); None when there is none."""
    if not text:
        return None
    return pd.read_csv(io.StringIO(text))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _sample(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sample(MAX_POINTS, random_state=0) if len(frame) > MAX_POINTS else frame


def predictions_png(
    current: pd.DataFrame, base: pd.DataFrame | None, out: Path, base_label: str, task: str = "regression"
) -> Path:
    """Actual vs predicted on the holdout, the base revision's points behind the workspace's, and y = x.
    Classification plot data holds label pairs: those become a confusion matrix of the workspace."""
    if task == "classification":
        return _confusion_png(current, out)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    frames = [(base, f"base ({base_label})", "#9e9e9e"), (current, "workspace", "#1f77b4")]
    values = []
    for frame, label, color in frames:
        if frame is None or frame.empty:
            continue
        shown = _sample(frame)
        ax.scatter(shown["actual"], shown["predicted"], s=6, alpha=0.5, color=color, label=label)
        values.extend([shown["actual"].min(), shown["actual"].max()])
    if values:
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="black", linewidth=1, linestyle="--", label="perfect")
    ax.set_xlabel("actual")
    ax.set_ylabel("predicted")
    ax.set_title("Holdout: actual vs predicted")
    ax.legend(loc="upper left")
    return _save(fig, out)


def _confusion_png(current: pd.DataFrame, out: Path) -> Path:
    plt = _pyplot()
    table = pd.crosstab(current["actual"].astype(str), current["predicted"].astype(str))
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.imshow(table.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(table.index)), table.index)
    for (i, j), count in pd.DataFrame(table.to_numpy()).stack().items():
        ax.text(j, i, str(count), ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("Holdout: confusion matrix")
    return _save(fig, out)


def drift_png(current: pd.DataFrame, base: pd.DataFrame | None, out: Path, base_label: str) -> Path:
    """Drift score per column: red bars for drifted columns, the base revision's score as a marker."""
    plt = _pyplot()
    frame = current.sort_values("drift_score")
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(frame) + 1.5), dpi=100)
    drifted = frame["drifted"].astype(str).str.lower().isin({"true", "1"})
    colors = ["#d62728" if flag else "#2ca02c" for flag in drifted]
    ax.barh(frame["column"].astype(str), frame["drift_score"], color=colors, label="workspace")
    if base is not None and not base.empty:
        scores = base.set_index("column")["drift_score"]
        matched = frame["column"].map(scores)
        ax.scatter(matched, frame["column"].astype(str), marker="|", s=200, color="black", label=f"base ({base_label})")
        ax.legend(loc="lower right")
    ax.set_xlabel("drift score (red: drifted)")
    ax.set_title("Drift score per column")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    from selfheal.core.atomic import atomic_write

    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    _pyplot().close(fig)
    return out
