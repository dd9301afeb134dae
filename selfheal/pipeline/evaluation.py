"""Score a model on the holdout and decide whether it may serve: the model gate's verdict, with its reasons.

The verdict only records; acting on it (promote, roll back) is `selfheal heal`'s job. Every check appears in
`reasons`, passed or not, so metrics/records/validation.json explains itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# predictions whose spread is below this share of the target's count as constant (regression)
CONSTANT_PREDICTIONS = 0.01

Check = tuple[bool, str]  # (passed, reason) of one gate check


def against_baseline(task: str, y_true: Any, y_pred: Any, min_gain: float) -> tuple[list[Check], dict[str, Any]]:
    """Checks that the model learnt something: a target with variance, predictions that are not (near) constant,
    and a gain over the trivial baseline on the same holdout - the holdout mean (regression) or its majority
    class (classification) - of at least `min_gain`, the share of the baseline's error the model removes
    (regression: 1 - MSE/MSE_baseline, i.e. R2 against the holdout mean; classification: of the error rate).
    A constant target makes R2 1.0 for a constant model; these checks stop such a model. Returns (checks, fields
    for metrics/validation.json)."""
    y_true, y_pred = pd.Series(np.asarray(y_true)), pd.Series(np.asarray(y_pred))
    if task == "regression":
        y_true, y_pred = y_true.astype(float), y_pred.astype(float)
        spread = float(y_true.std(ddof=0))
        if len(y_true) < 2 or spread <= 1e-12 * max(1.0, abs(float(y_true.mean()))):
            return [(False, f"the target has no variance on the holdout (every value {y_true.iloc[0]:g}): "
                            "nothing to learn")], {"baseline": "mean", "baseline_metric": None, "baseline_gain": None}
        baseline_error = spread**2
        error = float(((y_true - y_pred) ** 2).mean())
        baseline, baseline_metric = f"the holdout mean {y_true.mean():.3g}", 0.0
        pred_spread = float(y_pred.std(ddof=0))
        constant = pred_spread <= CONSTANT_PREDICTIONS * spread
        what = f"predictions are (near) constant (spread {pred_spread:.3g} versus the target's {spread:.3g})"
    else:
        counts = y_true.value_counts()
        if len(counts) < 2:
            return [(False, f"the target has a single class on the holdout ({counts.index[0]!r}): nothing to learn")], {
                "baseline": "majority class", "baseline_metric": None, "baseline_gain": None}
        share = float(counts.iloc[0]) / len(y_true)
        baseline_error, error = 1.0 - share, float((y_true != y_pred).mean())
        baseline, baseline_metric = f"the majority class {counts.index[0]!r} ({share:.1%} of the holdout)", share
        predicted = y_pred.value_counts()
        constant = len(predicted) < 2
        what = f"predicts a single class ({predicted.index[0]!r}) for every holdout row"
    gain = 1.0 - error / baseline_error
    checks: list[Check] = []
    if constant:
        checks.append((False, f"the model {what}"))
    verb = "beats" if gain >= min_gain else "does not beat"
    checks.append((gain >= min_gain, f"{verb} the trivial baseline, {baseline}, by the margin: removes {gain:.1%} of "
                                     f"its error, min {min_gain:.0%}"))
    return checks, {"baseline": baseline, "baseline_metric": baseline_metric, "baseline_gain": gain}


def verdict(task: str, scores: dict[str, float], min_threshold: float, checks: Sequence[Check] = ()) -> dict[str, Any]:
    """The candidate judged on its own: the gate metric meets the absolute threshold and every further check
    (`against_baseline`) passed. Production is not consulted: comparing with it is the gate's job in selfheal
    (selfheal.versions.gate), so this verdict depends only on the stage's declared deps."""
    name = metric_name(task)
    metric = scores[name]
    results: list[Check] = []
    if math.isnan(metric):
        results.append((False, f"{name} is undefined on {scores.get('n', 0)} holdout row(s)"))
    elif metric < min_threshold:
        results.append((False, f"{name} {_fmt(metric)} below threshold {_fmt(min_threshold)}"))
    else:
        results.append((True, f"{name} {_fmt(metric)} meets threshold {_fmt(min_threshold)}"))
    results += checks
    return {
        "metric_name": name,
        "metric": metric,
        "threshold": min_threshold,
        "passed": all(ok for ok, _ in results),
        "reasons": [reason for _, reason in results],
        "failures": [reason for ok, reason in results if not ok],
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
