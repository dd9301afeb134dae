"""Evidently's per-column drift with each column's test run once, and the dataset verdict on top of its HTML.

Evidently's DataDriftPreset runs every column's test three times (once per column for its ValueDrift, once for the
drifted-column count, once more for the table its HTML shows); at 100k rows per side that is about two thirds of
its time. `ColumnsDrift` makes the same ValueDrift per column and renders the preset's headline ("Dataset Drift is
detected ...", the drifted-column counters) from their verdicts. Imported only once Evidently is needed (~10 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evidently.core.container import MetricContainer
from evidently.legacy.renderers.html_widgets import CounterData, counter
from evidently.metrics import ValueDrift

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
