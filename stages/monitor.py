"""DVC stage `monitor`: data and prediction drift of data.current against the training reference.

Reads models/model.joblib (+ model.json) and models/reference.parquet; writes metrics/drift.json,
monitoring/drift_report.html (Evidently) and metrics/plots/drift.csv, and prints a one-line verdict.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python stages/monitor.py`: this checkout's package

from selfheal.errors import run_main  # noqa: E402

METRICS = Path("metrics/drift.json")
REPORT = Path("monitoring/drift_report.html")
PLOT = Path("metrics/plots/drift.csv")


def main() -> None:
    import pandas as pd

    from selfheal import io as sio
    from selfheal.config import load_params
    from selfheal.drift import coerce_features, detect_drift, predict_batch, summary
    from selfheal.modelio import load_model
    from selfheal.tabular import read_csv_checked, read_parquet_checked
    from selfheal.training import PREDICTION, REFERENCE_FILE

    params = load_params()
    data = params.data
    model = load_model()
    reference = read_parquet_checked(REFERENCE_FILE, "the train stage writes the drift reference; run `dvc repro`")
    current = coerce_features(read_csv_checked(data.current), model.features, data.current)
    current[PREDICTION] = predict_batch(model.pipeline, current, model.features, data.current)

    metrics, html = detect_drift(
        reference,
        current,
        model.features,
        data.target,
        data.task,
        params.drift_detection.drift_threshold,
        reference_name=str(REFERENCE_FILE),
        current_name=data.current,
    )
    sio.write_json(METRICS, metrics)
    sio.write_text(REPORT, html)
    plot = pd.DataFrame(
        [(name, col["drift_score"], col["drifted"]) for name, col in metrics["columns"].items()],
        columns=["column", "drift_score", "drifted"],
    )
    sio.write_text(PLOT, plot.to_csv(index=False, lineterminator="\n"))
    print(f"monitor: {summary(metrics)}")


if __name__ == "__main__":
    run_main(main)
