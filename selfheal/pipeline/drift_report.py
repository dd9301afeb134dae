"""Evidently itself: its per-column drift (the reference the profile engine's equality tests compare with) and its
HTML report of what the monitor compares (`selfheal drift-report`), with each column's test run once and the
dataset verdict on top. Imported only when Evidently is wanted (seconds): no stage imports this module.

Evidently's DataDriftPreset runs every column's test three times (once per column for its ValueDrift, once for the
drifted-column count, once more for the table its HTML shows); at 100k rows per side that is about two thirds of
its time. `ColumnsDrift` makes the same ValueDrift per column and renders the preset's headline ("Dataset Drift is
detected ...", the drifted-column counters) from their verdicts.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
from evidently.core.container import MetricContainer
from evidently.legacy.renderers.html_widgets import CounterData, counter
from evidently.metrics import ValueDrift

from selfheal.pipeline.drift import PREDICTION, compared, reference, scored
from selfheal.pipeline.profile_drift import dataset_drift


def drifted(result: Any) -> bool:
    """A ValueDrift result's verdict: its drift test failed."""
    return any(t.id == "drift" and t.status.value == "FAIL" for t in result.tests)


class ColumnsDrift(MetricContainer):
    """ValueDrift for each of `columns`; the HTML leads with the dataset verdict over `features`."""

    columns: list[str]
    features: list[str]
    drift_share: float

    def generate_metrics(self, context: Any) -> Sequence[Any]:
        return [ValueDrift(column=c) for c in self.columns]

    def render(self, context: Any, child_widgets: Any = None) -> list[Any]:
        verdicts = {m.column: drifted(context.get_metric_result(m)) for m in self.metrics(context)}
        count = sum(verdicts[c] for c in self.features)
        share = count / len(self.features)
        verdict = "detected" if dataset_drift(share, self.drift_share) else "NOT detected"
        headline = [
            counter(counters=[CounterData(
                f"Dataset Drift is {verdict}. Dataset drift detection threshold is {self.drift_share}",
                "Dataset Drift")]),
            counter(counters=[
                CounterData.int("Columns", len(self.features)),
                CounterData.int("Drifted Columns", count),
                CounterData.float("Share of Drifted Columns", share, 3),
            ]),
        ]
        return headline + super().render(context, child_widgets)


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


def evidently_drift(
    ref: pd.DataFrame, cur: pd.DataFrame, kinds: dict[str, str], dataset: tuple[list[str], float] | None = None
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Evidently's per-column drift (its default test per column type), each column tested once: the verdicts
    and the snapshot (for its HTML). With `dataset` (feature columns, drift share) the HTML leads with the dataset
    verdict, as DataDriftPreset's does, without that preset's repeated tests (selfheal.pipeline.drift_report)."""
    from evidently import DataDefinition, Dataset, Report

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


REPORT_ROWS = 100_000  # rows per side in Evidently's HTML: a seeded sample above it


def sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample of `rows` rows (the frame itself when it is not larger)."""
    return frame if len(frame) <= rows else frame.sample(n=rows, random_state=seed)


def drift_html(ref: pd.DataFrame, current: pd.DataFrame, features: list[dict[str, Any]], target: str,
               task: str, drift_threshold: float, prediction_column: str = PREDICTION, seed: int = 42) -> str:
    """Evidently's standalone HTML report of the same comparison, for people (imports Evidently: seconds). The
    reference above REPORT_ROWS is shown on a seeded sample of that size."""
    c = compared(sample(ref, REPORT_ROWS, seed), current, features, target, task, prediction_column)
    _, snapshot = evidently_drift(c.reference, c.current, c.kinds, ([f["name"] for f in features], drift_threshold))
    return str(snapshot.get_html_str(as_iframe=False))


def report_html(params: Any) -> str:
    """`drift_html` of what the monitor stage compares: the batch (a seeded sample of REPORT_ROWS rows when larger)
    capped like the training data and predicted, against the training reference."""
    from selfheal.core import atomic, workspace
    from selfheal.pipeline.artifact import load_model
    from selfheal.pipeline.checks import read_csv_checked

    model = load_model()
    batch = sample(read_csv_checked(params.data.current), REPORT_ROWS, seed=42)
    current = scored(batch, model, atomic.read_json(workspace.DATA_QUALITY), params.data.current)
    return drift_html(reference(), current, model.features, params.data.target, params.data.task,
                      params.drift_detection.drift_threshold)
