"""Drift detection on small California-housing-shaped batches (1,500 rows each), checked against real Evidently:
every comparison's per-column verdicts, scores and test names equal Evidently's on the same typed frames, and
Evidently's HTML report leads with the same dataset verdict.

With a reference above 1,000 rows Evidently scores numeric columns with the normed Wasserstein distance, so the
verdicts below are stable across seeds (no 5%-false-positive p-value lottery).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selfheal.core.config import TrainParams
from selfheal.core.errors import DataError
from selfheal.pipeline.drift import (
    coerce_features,
    compared,
    detect_drift,
    predict_batch,
    summary,
)
from selfheal.pipeline.drift_report import drift_html, evidently_drift
from selfheal.pipeline.profile_drift import dataset_drift
from selfheal.pipeline.synth import FEATURES, TARGET, make_current, make_housing
from selfheal.pipeline.training import PREDICTION, build_pipeline, infer_features

ROOT = Path(__file__).resolve().parents[2]
ROWS = 1500


@pytest.fixture(scope="module")
def model() -> tuple[Any, list[dict[str, Any]], pd.DataFrame]:
    """A real linear pipeline fitted on a reference sample, and that sample with its predictions."""
    reference = make_housing(ROWS, seed=1)
    features = infer_features(reference, TARGET)
    pipeline = build_pipeline(features, "regression", TrainParams(model="linear"))
    pipeline.fit(reference[FEATURES], reference[TARGET])
    return pipeline, features, reference.assign(**{PREDICTION: pipeline.predict(reference[FEATURES])})


def _run(model, current: pd.DataFrame, threshold: float = 0.5) -> dict[str, Any]:
    pipeline, features, reference = model
    current = coerce_features(current, features, "current.csv")
    current[PREDICTION] = predict_batch(pipeline, current, features, "current.csv")
    metrics = detect_drift(reference, current, features, TARGET, "regression", threshold)
    assert metrics["number_of_drifted_columns"] == sum(c["drifted"] for c in metrics["columns"].values())
    # Evidently, on the same typed frames: the same test, score and verdict for every column
    both = compared(reference, current, features, TARGET, "regression")
    theirs, _ = evidently_drift(both.reference, both.current, both.kinds)
    ours = {**metrics["columns"], PREDICTION: {"drift_score": metrics["prediction_drift_score"],
                                               "drifted": metrics["prediction_drifted"],
                                               "stattest": metrics["prediction_stattest"]}}
    if "target_drifted" in metrics:
        ours[TARGET] = {"drift_score": metrics["target_drift_score"], "drifted": metrics["target_drifted"],
                        "stattest": metrics["target_stattest"]}
    assert set(ours) == set(theirs)
    for col, v in theirs.items():
        assert (ours[col]["drifted"], ours[col]["stattest"]) == (v["drifted"], v["stattest"]), col
        assert ours[col]["drift_score"] == pytest.approx(v["drift_score"], rel=1e-6, abs=1e-12), col
    return metrics


def _drifted(metrics: dict[str, Any]) -> list[str]:
    return [name for name, col in metrics["columns"].items() if col["drifted"]]


def test_same_distribution_is_not_drift(model) -> None:
    metrics = _run(model, make_housing(ROWS, seed=3))
    assert metrics["drift_detected"] is False
    assert _drifted(metrics) == []
    assert metrics["drift_score"] == metrics["share_of_drifted_columns"] == 0.0
    assert list(metrics["columns"]) == FEATURES and metrics["number_of_columns"] == 8
    assert {c["stattest"] for c in metrics["columns"].values()} == {"Wasserstein distance (normed)"}
    assert all(0 <= c["drift_score"] < c["stattest_threshold"] for c in metrics["columns"].values())
    assert metrics["prediction_drifted"] is False and metrics["prediction_drift_score"] < 0.1
    assert metrics["target_drifted"] is False  # the batch has the target, so its drift is reported
    assert metrics["reference_rows"] == metrics["current_rows"] == metrics["current_rows_predicted"] == ROWS
    assert summary(metrics) == "no drift: 0/8 columns drifted (0.00 < 0.50); prediction drift: no"


def test_one_shifted_column_is_flagged_alone_and_moves_the_predictions(model) -> None:
    current = make_housing(ROWS, seed=3)
    current["MedInc"] += 2 * current["MedInc"].std()
    metrics = _run(model, current)
    assert _drifted(metrics) == ["MedInc"]
    assert metrics["number_of_drifted_columns"] == 1 and metrics["share_of_drifted_columns"] == 1 / 8
    assert metrics["drift_detected"] is False  # 1/8 < 0.5
    # income drives the model: its predictions drift although only one input did
    assert metrics["prediction_drifted"] is True and metrics["prediction_drift_score"] > 0.1
    assert metrics["target_drifted"] is False  # the target was not shifted
    # the rule is share >= threshold (Evidently's own): exactly 1/8 at threshold 0.125 counts as drift
    at_boundary = _run(model, current, threshold=0.125)
    assert at_boundary["drift_detected"] is True
    assert summary(at_boundary) == "drift detected: 1/8 columns drifted (0.12 >= 0.12); prediction drift: yes"


def test_drift_in_most_columns_is_detected_without_a_target(model) -> None:
    current = make_current(ROWS, drift=1.0, seed=3).assign(**{TARGET: ""})  # labels not known yet
    metrics = _run(model, current)
    assert _drifted(metrics) == ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup"]
    assert metrics["share_of_drifted_columns"] == 0.75 and metrics["drift_detected"] is True
    assert metrics["prediction_drifted"] is True
    assert not any(key.startswith("target_") for key in metrics)  # no labels in the batch: nothing claimed


def test_dirty_cells_are_left_out_not_fatal(model) -> None:
    current = make_housing(ROWS, seed=3).astype({"HouseAge": object, "AveRooms": object})
    current.loc[:9, "HouseAge"] = "N/A"
    current.loc[10:14, "AveRooms"] = " 5.1 "  # padded numbers are still numbers
    current.loc[15:19, "Population"] = np.nan
    metrics = _run(model, current)
    assert metrics["drift_detected"] is False and _drifted(metrics) == []
    assert metrics["current_rows"] == ROWS
    assert metrics["current_rows_predicted"] == ROWS - 15  # 10 unreadable ages + 5 gaps; padded rooms parse


def test_missing_feature_column_names_it(model) -> None:
    _pipeline, features, reference = model
    current = make_housing(50, seed=2).drop(columns=["Latitude", "AveOccup"])
    with pytest.raises(DataError, match=r"current\.csv: missing feature column\(s\) \['AveOccup', 'Latitude'\]"):
        coerce_features(current, features, "current.csv")
    with pytest.raises(DataError, match=r"reference: no 'prediction' column"):
        detect_drift(reference.drop(columns=[PREDICTION]), reference, features, TARGET, "regression", 0.5)
    empty = reference.assign(HouseAge="?")
    with pytest.raises(DataError, match=r"current batch: column 'HouseAge' has no usable values"):
        detect_drift(reference, empty, features, TARGET, "regression", 0.5)


def test_classification_with_a_categorical_feature() -> None:
    """Labels and categories are compared as categories: int labels (parquet) match float ones (CSV with gaps)."""
    rng = np.random.default_rng(0)
    n = 1200

    def batch(shift: float) -> pd.DataFrame:
        return pd.DataFrame({
            "x": rng.normal(shift, 1, n),
            "region": rng.choice(["north", "south", "coast"], n, p=[0.5 - shift / 4, 0.3, 0.2 + shift / 4]),
            "label": rng.integers(0, 2, n),
        })

    features = [
        {"name": "x", "kind": "numeric"},
        {"name": "region", "kind": "categorical", "categories": ["coast", "north", "south"]},
    ]
    reference = batch(0.0).assign(prediction=lambda d: (d["x"] > 0).astype(int))
    current = batch(1.0).assign(prediction=lambda d: (d["x"] > 0).astype(int))
    current["label"] = current["label"].astype(float)
    current.loc[:5, "label"] = np.nan
    metrics = detect_drift(reference, current, features, "label", "classification", 0.5)
    assert _drifted(metrics) == ["x", "region"] and metrics["drift_detected"] is True
    assert metrics["columns"]["region"]["stattest"] == "Jensen-Shannon distance"
    assert metrics["prediction_drifted"] is True
    assert metrics["target_drifted"] is False  # 0/1 labels vs 0.0/1.0 + gaps: same categories, no drift


def test_the_monitor_stage_imports_neither_evidently_nor_mlflow() -> None:
    """`import evidently` costs seconds: the monitor measures drift without it (the HTML is drift-report's)."""
    code = ("import sys; import stages.monitor, selfheal.pipeline.drift; "
            "print(sorted({'evidently', 'mlflow'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_one_drift_rule_is_inclusive_and_needs_a_drifted_column() -> None:
    assert dataset_drift(0.5, 0.5) and dataset_drift(0.75, 0.5)
    assert not dataset_drift(0.49, 0.5)
    assert not dataset_drift(0.0, 0.0)  # a threshold of 0 does not flag a batch without any drifted column


def test_each_column_is_tested_once(model, monkeypatch: pytest.MonkeyPatch) -> None:
    """DataDriftPreset ran every column's test three times (ValueDrift, its drifted-column count, the
    table of its HTML); now each column (features, prediction, target) is tested once and the HTML still leads
    with the dataset verdict."""
    import evidently.legacy.calculations.data_drift as legacy_drift
    import evidently.metrics.column_statistics as column_statistics

    tested: list[str] = []
    real = legacy_drift.get_one_column_drift

    def counted(*args: Any, **kwargs: Any) -> Any:
        tested.append(kwargs["column_name"])
        return real(*args, **kwargs)

    monkeypatch.setattr(legacy_drift, "get_one_column_drift", counted)
    monkeypatch.setattr(column_statistics, "get_one_column_drift", counted)
    pipeline, features, reference = model
    current = coerce_features(make_current(ROWS, drift=1.0, seed=4), features, "current.csv")
    current[PREDICTION] = predict_batch(pipeline, current, features, "current.csv")
    html = drift_html(reference, current, features, TARGET, "regression", 0.5)
    assert sorted(tested) == sorted([*FEATURES, PREDICTION, TARGET])
    assert html.lstrip().startswith("<!DOCTYPE html>") and "Dataset Drift is detected." in html
    assert detect_drift(reference, current, features, TARGET, "regression", 0.5)["drift_detected"] is True


class _ThreadProbe:
    """A fitted pipeline that records how many OpenMP threads its predict could use."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline, self.openmp_threads = pipeline, []

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        from threadpoolctl import threadpool_info

        self.openmp_threads = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]
        return self.pipeline.predict(X)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenMP has one thread anyway")
def test_monitor_predicts_single_threaded(model) -> None:
    # OpenMP's spin-waiting on a busy machine made monitor's predict take seconds
    from threadpoolctl import threadpool_limits

    pipeline, features, _ = model
    probe = _ThreadProbe(pipeline)
    current = coerce_features(make_housing(200, seed=5), features, "current.csv")
    with threadpool_limits(limits=2, user_api="openmp"):  # as outside the tests (conftest sets OMP_NUM_THREADS=1)
        predicted = predict_batch(probe, current, features, "current.csv")
    assert probe.openmp_threads and max(probe.openmp_threads) == 1
    assert np.allclose(predicted.to_numpy(dtype=float), pipeline.predict(current[FEATURES]))
