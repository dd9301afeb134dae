"""Data drift and prediction drift of the current batch against the training reference, with Evidently 0.7.

Per column, Evidently picks the statistical test itself (its documented defaults): with a reference of at most
1,000 rows a p-value test (K-S for numeric columns, chi-square or Z-test for categorical ones; drifted when the
p-value is below 0.05), with a larger reference a distance (Wasserstein, normed by the reference std, for numeric;
Jensen-Shannon for categorical; drifted when the distance reaches 0.1). So a column's `drift_score` is a p-value
or a distance depending on its `stattest`; `drifted` is always Evidently's own verdict.

The dataset verdict: drift_detected = at least one feature column drifted and
share_of_drifted_columns >= drift_threshold. ">=" is Evidently's own rule for "dataset drift", so drift.json and
the HTML report always agree (the extra "at least one" keeps a threshold of 0 from flagging a batch that has
no drift at all). `drift_score` is that share, the number the guide's `--drift-score` carries.

The current batch may hold the same dirty cells as raw data. Columns are read the way fix_data reads them
(selfheal.pipeline.checks: padded numbers parse, placeholders such as "N/A" and other text in numeric columns become
missing); missing cells are left out of every test, by Evidently, and rows with a missing feature get no
prediction (they are not imputed). Outliers are capped at the training data's own fences (`cap_like_training`),
so the batch is compared with the reference like with like.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pandas as pd

from selfheal.core.errors import DataError
from selfheal.pipeline.checks import categorical_values, parse_numbers
from selfheal.pipeline.profile_drift import dataset_drift
from selfheal.pipeline.training import PREDICTION, predict


def _numbers(series: pd.Series) -> pd.Series:
    return pd.Series(parse_numbers(series).values, index=series.index)


def _labels(series: pd.Series) -> pd.Series:
    """Categories as text, so 1 (an int in parquet) and 1.0 (a float in a CSV with gaps) are the same label."""
    if pd.api.types.is_float_dtype(series):
        values = series.dropna()
        if (values == values.round()).all():
            series = series.astype("Int64")
    return categorical_values(series)


_CONVERT = {"numeric": _numbers, "categorical": _labels}


def coerce_features(frame: pd.DataFrame, features: list[dict[str, Any]], source: str, hint: str = "") -> pd.DataFrame:
    """Check the model's feature columns are present; read them as fix_data does (dirty cells -> missing).
    `hint` (what to set when they are not) ends the error message."""
    missing = [f["name"] for f in features if f["name"] not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing feature column(s) {missing} that the model needs "
            f"(expected {[f['name'] for f in features]}){hint}"
        )
    out = frame.copy(deep=False)  # columns are replaced, never written into: the caller's frame is untouched
    for f in features:
        out[f["name"]] = _CONVERT[f["kind"]](out[f["name"]])
    return out


def cap_like_training(frame: pd.DataFrame, features: list[dict[str, Any]], quality: dict[str, Any] | None
                      ) -> pd.DataFrame:
    """The batch's numeric features capped at the fences fix_data capped the training data at (the `lower` and
    `upper` per column of metrics/data_quality.json). The reference is capped training data: compared raw, the
    batch's outliers alone read as drift, even for a random sample of the training data itself."""
    recorded = (quality or {}).get("columns") or {}
    out = frame.copy(deep=False)
    for f in features:
        fences = recorded.get(f["name"]) or {}
        if f["kind"] == "numeric" and "lower" in fences and "upper" in fences:
            out[f["name"]] = out[f["name"]].clip(fences["lower"], fences["upper"])
    return out


def predict_batch(pipeline: Any, frame: pd.DataFrame, features: list[dict[str, Any]], source: str) -> pd.Series:
    """The model's predictions for rows with every feature present; NaN for the others (left out of the test).

    Rows with gaps are not imputed: made-up inputs would pull the prediction distribution towards the median.
    """
    names = [f["name"] for f in features]
    complete = frame[names].notna().all(axis=1)
    out = pd.Series(float("nan"), index=frame.index, dtype=object)
    if complete.any():
        try:
            predicted = predict(pipeline, frame.loc[complete, names])  # single-threaded: see training.predict
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: the model cannot predict on this batch ({exc})") from None
        out[complete] = predicted
    return out.infer_objects()


def _typed(frame: pd.DataFrame, kinds: dict[str, str], source: str) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for name, kind in kinds.items():
        out[name] = _CONVERT[kind](frame[name])
        if out[name].isna().all():
            raise DataError(f"{source}: column {name!r} has no usable values (all missing or not {kind})")
    return out


def _score(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _read_snapshot(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-column verdicts from a Snapshot.dict(): ValueDrift values and their drift tests."""
    failed = {t["metric_config"]["metric_id"]: t["status"] == "FAIL" for t in result["tests"] if t["id"] == "drift"}
    return {
        metric["config"]["column"]: {
            "drift_score": _score(metric["value"]),
            "drifted": failed[metric["id"]],
            "stattest": metric["config"]["method"],
            "stattest_threshold": metric["config"]["threshold"],
        }
        for metric in result["metrics"]
        if metric["config"]["type"].endswith(":ValueDrift")
    }


def sample(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of `rows` rows (the frame itself when it is not larger): Evidently's verdicts on 100k rows
    per side equal those on millions, at a fraction of the time and memory."""
    return frame if rows is None or len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def evidently_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, kinds: dict[str, str], dataset: tuple[list[str], float] | None = None
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Evidently's per-column drift (its default test per column type), each column tested once: the verdicts
    and the snapshot (for its HTML). With `dataset` (feature columns, drift share) the HTML leads with the dataset
    verdict, as DataDriftPreset's does, without that preset's repeated tests (selfheal.pipeline.drift_report)."""
    from evidently import DataDefinition, Dataset, Report  # ~10 s: only once the inputs are known to be usable
    from evidently.metrics import ValueDrift

    from selfheal.pipeline.drift_report import ColumnsDrift

    definition = DataDefinition(
        numerical_columns=[c for c, k in kinds.items() if k == "numeric"],
        categorical_columns=[c for c, k in kinds.items() if k == "categorical"],
    )
    items: list[Any] = (
        [ColumnsDrift(columns=list(kinds), features=dataset[0], drift_share=dataset[1])] if dataset
        else [ValueDrift(column=c) for c in kinds]
    )
    report = Report(items, include_tests=True)
    with warnings.catch_warnings():  # constant columns make numpy/scipy warn; the verdict is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition), Dataset.from_pandas(ref, data_definition=definition)
        )
    return _read_snapshot(snapshot.dict()), snapshot


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[dict[str, Any]],
    target: str,
    task: str,
    drift_threshold: float,
    prediction_column: str = PREDICTION,
    *,
    reference_name: str = "reference",
    current_name: str = "current batch",
    sample_rows: int | None = None,
    seed: int = 42,
    current_rows: int | None = None,
) -> tuple[dict[str, Any], str]:
    """Compare `current` with `reference`; returns (metrics, standalone HTML report).

    Both frames need the feature columns and `prediction_column`; the target is compared too when the
    current batch has it (and the reference does). Only feature columns count towards the share.
    With `sample_rows`, each side larger than that is tested on a seeded sample of it (metrics say so);
    `current_rows` is the batch's size when the caller passes that sample itself (monitor samples before it
    predicts: `sample` picks the same rows whatever the columns hold).
    """
    for frame, source in ((reference, reference_name), (current, current_name)):
        missing = [f["name"] for f in features if f["name"] not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: missing feature column(s) {missing} that the model needs "
                f"(expected {[f['name'] for f in features]})"
            )
    rows = {"reference": len(reference), "current": len(current) if current_rows is None else current_rows}
    reference, current = sample(reference, sample_rows, seed), sample(current, sample_rows, seed)
    for frame, source in ((reference, reference_name), (current, current_name)):
        if prediction_column not in frame.columns:
            raise DataError(f"{source}: no {prediction_column!r} column with the model's predictions")
    outcome = "numeric" if task == "regression" else "categorical"
    kinds = {f["name"]: f["kind"] for f in features}
    feature_names = list(kinds)
    kinds[prediction_column] = outcome
    # a batch without labels yet may still carry an all-blank target column: that is "no target", not an error
    has_target = (
        target in reference.columns and target in current.columns and _CONVERT[outcome](current[target]).notna().any()
    )
    if has_target:
        kinds[target] = outcome
    ref, cur = _typed(reference, kinds, reference_name), _typed(current, kinds, current_name)

    columns, snapshot = evidently_drift(ref, cur, kinds, (feature_names, drift_threshold))
    count = sum(columns[name]["drifted"] for name in feature_names)
    share = count / len(feature_names)  # Evidently's DriftedColumnsCount share

    prediction = columns.pop(prediction_column)
    metrics: dict[str, Any] = {
        "drift_detected": dataset_drift(share, drift_threshold),
        "drift_score": share,
        "share_of_drifted_columns": share,
        "number_of_drifted_columns": count,
        "number_of_columns": len(feature_names),
        "threshold": drift_threshold,
        "prediction_drift_score": prediction["drift_score"],
        "prediction_drifted": prediction["drifted"],
        "prediction_stattest": prediction["stattest"],
    }
    if has_target:
        target_drift = columns.pop(target)
        metrics |= {
            "target_drift_score": target_drift["drift_score"],
            "target_drifted": target_drift["drifted"],
            "target_stattest": target_drift["stattest"],
        }
    metrics |= {
        "reference_rows": rows["reference"],
        "current_rows": rows["current"],
        "sampled": {"rows_per_side": sample_rows, "seed": seed, "reference": len(ref), "current": len(cur)}
        if len(ref) < rows["reference"] or len(cur) < rows["current"]
        else None,
        "current_rows_predicted": int(cur[prediction_column].notna().sum()),
        "columns": columns,
    }
    return metrics, snapshot.get_html_str(as_iframe=False)


def summary(metrics: dict[str, Any]) -> str:
    """One line: `drift detected: 7/8 columns drifted (0.88 >= 0.50); prediction drift: yes`."""
    share, threshold = metrics["share_of_drifted_columns"], metrics["threshold"]
    verdict = "drift detected" if metrics["drift_detected"] else "no drift"
    rel = ">=" if share >= threshold else "<"
    counts = f"{metrics['number_of_drifted_columns']}/{metrics['number_of_columns']} columns drifted"
    prediction = "yes" if metrics["prediction_drifted"] else "no"
    line = f"{verdict}: {counts} ({share:.2f} {rel} {threshold:.2f}); prediction drift: {prediction}"
    sampled = metrics.get("sampled")
    if sampled:
        line += f" (tested on a seeded sample of {sampled['rows_per_side']:,} rows per side, seed {sampled['seed']})"
    return line
