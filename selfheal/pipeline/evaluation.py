"""Score a model on the holdout and decide whether it may serve: the model gate's verdict, with its reasons.

The verdict only records; acting on it (promote, roll back) is `selfheal heal`'s job. Every check appears in
`reasons`, passed or not, so metrics/records/validation.json explains itself.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def metric_name(task: str) -> str:
    """The gate metric: R2 for regression, accuracy for classification (model_validation.min_accuracy_threshold)."""
    return "r2" if task == "regression" else "accuracy"


def score(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    """Regression: r2, rmse, mae. Classification: accuracy and macro F1 (label-agnostic: no positive class to
    guess, and a rare class counts as much as a common one). Plus n, the number of rows scored."""
    from sklearn import metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if task == "regression":
        scores = {
            "r2": metrics.r2_score(y_true, y_pred) if len(y_true) > 1 else math.nan,
            "rmse": metrics.root_mean_squared_error(y_true, y_pred),
            "mae": metrics.mean_absolute_error(y_true, y_pred),
        }
    else:
        scores = {
            "accuracy": metrics.accuracy_score(y_true, y_pred),
            "f1": metrics.f1_score(y_true, y_pred, average="macro", zero_division=0),
        }
    return {**{k: float(v) for k, v in scores.items()}, "n": len(y_true)}


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _against_production(
    name: str, metric: float, max_relative_drop: float, production: dict[str, Any]
) -> tuple[bool, str, float | None]:
    """(passed, reason, relative drop) versus the production model's recorded metric."""
    version, prod = production["version"], production.get("metric")
    if production.get("metric_name", name) != name or not isinstance(prod, (int, float)):
        return True, f"production {version} has no recorded {name}: no comparison", None
    # relative to the production metric's size (R2 can be negative); a production metric of 0 compares absolutely
    drop = (prod - metric) / (abs(prod) or 1.0)
    limit = f"max {max_relative_drop * 100:g}%"
    change = f"improved {-drop:.1%}" if drop < 0 else f"dropped {drop:.1%}"
    reason = f"{name} {_fmt(metric)} {change} versus production {version} ({_fmt(prod)}), {limit}"
    return drop <= max_relative_drop, reason, drop


def verdict(
    task: str,
    scores: dict[str, float],
    min_threshold: float,
    max_relative_drop: float,
    production: dict[str, Any] | None,
) -> dict[str, Any]:
    """Pass only if the gate metric meets the absolute threshold and has not dropped too far below production."""
    name = metric_name(task)
    metric = scores[name]
    reasons: list[str] = []
    if math.isnan(metric):
        passed = False
        reasons.append(f"{name} is undefined on {scores.get('n', 0)} holdout row(s)")
    elif metric < min_threshold:
        passed = False
        reasons.append(f"{name} {_fmt(metric)} below threshold {_fmt(min_threshold)}")
    else:
        passed = True
        reasons.append(f"{name} {_fmt(metric)} meets threshold {_fmt(min_threshold)}")

    relative_drop = None
    if production is None:
        reasons.append("no production model to compare with")
    elif not math.isnan(metric):
        ok, reason, relative_drop = _against_production(name, metric, max_relative_drop, production)
        passed = passed and ok
        reasons.append(reason)
    return {
        "metric_name": name,
        "metric": metric,
        "threshold": min_threshold,
        "max_relative_drop": max_relative_drop,
        "passed": passed,
        "reasons": reasons,
        "production_version": production["version"] if production else None,
        "production_metric": production.get("metric") if production else None,
        "relative_drop": relative_drop,
    }


def plot_frames(task: str, y_true: Any, y_pred: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, residuals) for the DVC plots. Classification has no residuals: an empty frame with the
    declared header keeps the output present and `dvc plots` happy; predictions then holds the confusion pairs."""
    predictions = pd.DataFrame({"actual": np.asarray(y_true), "predicted": np.asarray(y_pred)})
    if task == "regression":
        predictions = predictions.astype(float).round(5)
        residual = (predictions["actual"] - predictions["predicted"]).round(5)
        residuals = pd.DataFrame({"predicted": predictions["predicted"], "residual": residual})
    else:
        residuals = pd.DataFrame({"predicted": [], "residual": []})
    return predictions, residuals
