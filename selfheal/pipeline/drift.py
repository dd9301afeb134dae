"""Data drift and prediction drift of the current batch against the training reference: Evidently 0.7's tests
and verdicts, computed from mergeable profiles (selfheal.pipeline.profile_drift; equality tests compare them with
Evidently itself; Evidently's own HTML report of the same comparison is selfheal.pipeline.drift_report's).

Per column, the statistical test is the one Evidently picks (its documented defaults): with a reference of at most
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
missing); missing cells are left out of every test, as Evidently leaves them out, and rows with a missing feature get no
prediction (they are not imputed). Outliers are capped at the training data's own fences (`cap_like_training`),
so the batch is compared with the reference like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def _check_features(frame: pd.DataFrame, features: list[dict[str, Any]], source: str, hint: str = "") -> None:
    missing = [f["name"] for f in features if f["name"] not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing feature column(s) {missing} that the model needs "
                        f"(expected {[f['name'] for f in features]}){hint}")


def coerce_features(frame: pd.DataFrame, features: list[dict[str, Any]], source: str, hint: str = "") -> pd.DataFrame:
    """Check the model's feature columns are present; read them as fix_data does (dirty cells -> missing).
    `hint` (what to set when they are not) ends the error message."""
    _check_features(frame, features, source, hint)
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


def _kinds(features: list[dict[str, Any]], task: str, prediction_column: str) -> dict[str, str]:
    """The compared columns: the features, then the prediction (and the target, added when present)."""
    return {**{f["name"]: f["kind"] for f in features},
            prediction_column: "numeric" if task == "regression" else "categorical"}


def _with_target(kinds: dict[str, str], target: str, task: str, reference: pd.DataFrame, current: pd.DataFrame
                 ) -> dict[str, str]:
    """`kinds` plus the target when both sides carry it with values (a batch without labels yet may still have an
    all-blank target column: that is "no target", not an error)."""
    outcome = "numeric" if task == "regression" else "categorical"
    present = target in reference.columns and target in current.columns and \
        _CONVERT[outcome](current[target]).notna().any()
    return {**kinds, target: outcome} if present else kinds


@dataclass
class Compared:
    """Both sides typed for the tests ({column: numeric|categorical}: the features, the prediction, the target)."""

    reference: pd.DataFrame
    current: pd.DataFrame
    kinds: dict[str, str]


def compared(reference: pd.DataFrame, current: pd.DataFrame, features: list[dict[str, Any]], target: str, task: str,
             prediction_column: str = PREDICTION, reference_name: str = "reference",
             current_name: str = "current batch") -> Compared:
    """Both frames checked and typed as the tests read them; a one-line error naming what is missing."""
    for frame, source in ((reference, reference_name), (current, current_name)):
        _check_features(frame, features, source)
        if prediction_column not in frame.columns:
            raise DataError(f"{source}: no {prediction_column!r} column with the model's predictions")
    kinds = _with_target(_kinds(features, task, prediction_column), target, task, reference, current)
    return Compared(_typed(reference, kinds, reference_name), _typed(current, kinds, current_name), kinds)


def verdicts(reference: Any, current: Any, features: list[str], kinds: dict[str, str], target: str,
             drift_threshold: float, prediction_column: str = PREDICTION) -> dict[str, Any]:
    """drift.json's verdicts from the merged profiles of both sides: per column the test Evidently picks, its score
    and verdict (tests keep them equal to Evidently's), the share of drifted features against the threshold, and
    the prediction's (and the target's) drift."""
    from selfheal.pipeline import profile_drift

    columns = {name: {**v, "stattest": profile_drift.EVIDENTLY_NAMES[v["stattest"]]}
               for name, v in profile_drift.drift(reference, current, list(kinds)).items()}
    count = sum(columns[name]["drifted"] for name in features)
    share = count / len(features)  # Evidently's DriftedColumnsCount share
    prediction = columns.pop(prediction_column)
    metrics: dict[str, Any] = {
        "drift_detected": dataset_drift(share, drift_threshold),
        "drift_score": share,
        "share_of_drifted_columns": share,
        "number_of_drifted_columns": count,
        "number_of_columns": len(features),
        "threshold": drift_threshold,
        "prediction_drift_score": prediction["drift_score"],
        "prediction_drifted": prediction["drifted"],
        "prediction_stattest": prediction["stattest"],
    }
    if target in columns:
        target_drift = columns.pop(target)
        metrics |= {
            "target_drift_score": target_drift["drift_score"],
            "target_drifted": target_drift["drifted"],
            "target_stattest": target_drift["stattest"],
        }
    return metrics | {"reference_rows": reference.rows, "current_rows": current.rows,
                      "current_rows_predicted": current.columns[prediction_column].n, "columns": columns}


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, features: list[dict[str, Any]], target: str,
                 task: str, drift_threshold: float, prediction_column: str = PREDICTION, *,
                 reference_name: str = "reference", current_name: str = "current batch") -> dict[str, Any]:
    """Compare two frames in memory (both with the feature columns and `prediction_column`; the target too when
    the current batch has it): `verdicts` of their profiles."""
    from selfheal.pipeline import profiles

    c = compared(reference, current, features, target, task, prediction_column, reference_name, current_name)
    return verdicts(profiles.profile_frame(c.reference, c.kinds), profiles.profile_frame(c.current, c.kinds),
                    [f["name"] for f in features], c.kinds, target, drift_threshold, prediction_column)


@dataclass
class Monitored:
    """What the monitor compares: the profiles of the training reference and of every row of the current batch
    (with the model's predictions), the compared columns, and the model."""

    reference: Any
    current: Any
    kinds: dict[str, str]
    model: Any


def scored(batch: pd.DataFrame, model: Any, quality: dict[str, Any] | None, source: str, hint: str = "") -> pd.DataFrame:
    """A batch as the monitor compares it: the model's features read as fix_data reads them, capped at the fences
    fix_data capped the training data at (`quality`), and the model's predictions."""
    current = cap_like_training(coerce_features(batch, model.features, source, hint), model.features, quality)
    current[PREDICTION] = predict_batch(model.pipeline, current, model.features, source)
    return current


def reference() -> pd.DataFrame:
    """The train stage's drift reference (a sample of the training rows, with the target and predictions)."""
    from selfheal.core import workspace
    from selfheal.pipeline.checks import read_parquet_checked

    return read_parquet_checked(workspace.REFERENCE, "the train stage writes the drift reference; run `dvc repro`")


def _batch_part(part: Any, model: Any, quality: dict[str, Any] | None, kinds: dict[str, str], source: str,
                hint: str) -> Any:
    """One partition of the current batch, scored, its other compared columns (prediction, target) typed, then
    profiled."""
    from selfheal.pipeline import engine, profiles

    current = scored(engine.read_part(part), model, quality, source, hint)
    features = {f["name"] for f in model.features}  # typed already
    typed = pd.DataFrame({name: current[name] if name in features else _CONVERT[kind](current[name])
                          for name, kind in kinds.items()}, index=current.index)
    return profiles.profile_frame(typed, kinds)


def monitored(params: Any) -> Monitored:
    """The monitor's comparison, streamed: the current batch (data.current: a CSV, a directory or glob of CSV or
    parquet parts, an s3:// path) partition by partition on the configured engine (scale.engine: local, or Dask),
    each part read as fix_data reads it, capped at the fences fix_data capped the training data at and predicted,
    its profile merged; memory holds one partition at a time. The reference is the train stage's sample."""
    import functools

    from selfheal.core import atomic, workspace
    from selfheal.pipeline import engine, profiles
    from selfheal.pipeline.artifact import load_model

    data, scale = params.data, params.scale
    model = load_model()
    ref_frame = reference()
    hint = (f"; set data.current in {workspace.PARAMS} to a batch with the columns of the training data "
            f"(data.raw: {data.raw}), e.g. a sample of it")
    parts = engine.partitions(data.current, scale.partition_mb)
    if not parts:
        raise DataError(f"{data.current}: a header and no rows: the monitor needs a batch to compare{hint}")
    header = parts[0].header or engine.read_part(parts[0]).columns
    kinds = _kinds(model.features, data.task, PREDICTION)
    outcome = kinds[PREDICTION]
    if data.target in header and data.target in ref_frame.columns:
        kinds[data.target] = outcome
    profile = functools.partial(_batch_part, model=model, quality=atomic.read_json(workspace.DATA_QUALITY),
                                kinds=kinds, source=data.current, hint=hint)
    with engine.mapper(scale.engine, scale.workers) as run:
        current = profiles.merge(run(profile, parts))
    if data.target in kinds and current.columns[data.target].n == 0:  # a blank label column: no target yet
        del kinds[data.target]
    for name, kind in kinds.items():
        if current.columns[name].n == 0:
            raise DataError(f"{data.current}: column {name!r} has no usable values (all missing or not {kind})")
    ref = _typed(ref_frame, kinds, str(workspace.REFERENCE))
    return Monitored(profiles.profile_frame(ref, kinds), current, kinds, model)


def summary(metrics: dict[str, Any]) -> str:
    """One line: `drift detected: 7/8 columns drifted (0.88 >= 0.50); prediction drift: yes`."""
    share, threshold = metrics["share_of_drifted_columns"], metrics["threshold"]
    verdict = "drift detected" if metrics["drift_detected"] else "no drift"
    rel = ">=" if share >= threshold else "<"
    counts = f"{metrics['number_of_drifted_columns']}/{metrics['number_of_columns']} columns drifted"
    prediction = "yes" if metrics["prediction_drifted"] else "no"
    return f"{verdict}: {counts} ({share:.2f} {rel} {threshold:.2f}); prediction drift: {prediction}"
