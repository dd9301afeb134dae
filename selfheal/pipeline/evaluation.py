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


def input_schema(features: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What a client must send: each feature's name and kind (categories may grow; unseen ones are tolerated)."""
    return [{"name": str(f["name"]), "kind": str(f["kind"])} for f in features]


def schema_changes(features: list[dict[str, Any]], production: dict[str, Any]) -> list[str]:
    """How the model's input columns differ from production's recorded ones (`features` in production.json);
    [] when they match or production records none (promoted before the schema was recorded: nothing to compare)."""
    recorded = production.get("features")
    if not isinstance(recorded, list):
        return []
    old = {f["name"]: f["kind"] for f in input_schema(recorded)}
    new = {f["name"]: f["kind"] for f in input_schema(features)}
    removed, added = [n for n in old if n not in new], [n for n in new if n not in old]
    changes = [f"column {n!r} was {old[n]}, now {new[n]}" for n in old if n in new and old[n] != new[n]]
    if removed:
        changes.append(f"column(s) {removed} no longer taken")
    if added:
        changes.append(f"new column(s) {added}")
    return changes


def _schema_reason(changes: list[str], production: dict[str, Any]) -> str:
    version = production["version"]
    if changes:
        return (f"input schema differs from production {version}: {'; '.join(changes)} (its clients would get 422; "
                "`selfheal promote --accept-schema-change` accepts it)")
    if not isinstance(production.get("features"), list):
        return f"production {version} records no input schema: not compared"
    return f"input columns and types match production {version}"


def verdict(
    task: str,
    scores: dict[str, float],
    min_threshold: float,
    max_relative_drop: float,
    production: dict[str, Any] | None,
    checks: Sequence[Check] = (),
    features: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Pass only if the gate metric meets the absolute threshold, has not dropped too far below production, every
    further check (`against_baseline`) passed, and the model's input columns (`features`, from model.json) are
    production's. `passed_except_schema` tells heal a good model whose inputs changed (a person decides) from a
    bad one (rolled back)."""
    name = metric_name(task)
    metric = scores[name]
    results: list[Check] = []
    if math.isnan(metric):
        results.append((False, f"{name} is undefined on {scores.get('n', 0)} holdout row(s)"))
    elif metric < min_threshold:
        results.append((False, f"{name} {_fmt(metric)} below threshold {_fmt(min_threshold)}"))
    else:
        results.append((True, f"{name} {_fmt(metric)} meets threshold {_fmt(min_threshold)}"))

    relative_drop = None
    if production is None:
        results.append((True, "no production model to compare with"))
    elif not math.isnan(metric):
        ok, reason, relative_drop = _against_production(name, metric, max_relative_drop, production)
        results.append((ok, reason))
    results += checks
    passed = all(ok for ok, _ in results)
    changes: list[str] = []
    if features is not None and production:
        changes = schema_changes(features, production)
        results.append((not changes, _schema_reason(changes, production)))
    return {
        "metric_name": name,
        "metric": metric,
        "threshold": min_threshold,
        "max_relative_drop": max_relative_drop,
        "passed": passed and not changes,
        "passed_except_schema": passed,
        "schema_changes": changes,
        "reasons": [reason for _, reason in results],
        "failures": [reason for ok, reason in results if not ok],
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
