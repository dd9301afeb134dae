"""DVC stage `monitor`: data and prediction drift of data.current against the training reference.

Reads models/model.joblib (+ model.json), models/reference.parquet and the fences fix_data capped the training
data at (the data quality record: the batch is capped the same way before it is compared); writes the drift
record (per column, and which model it describes) and its declared metrics, monitoring/drift_report.html
(Evidently) and metrics/plots/drift.csv, and prints a one-line verdict. Each side above
scale.monitor_sample_rows is tested on a seeded sample of that size (the record's `sampled`).
"""

from __future__ import annotations

from selfheal.core import workspace
from selfheal.pipeline.preload import run_stage


def main() -> None:
    import pandas as pd

    from selfheal.core import atomic
    from selfheal.core.config import load_params
    from selfheal.pipeline import metrics as declared
    from selfheal.pipeline.artifact import load_model
    from selfheal.pipeline.checks import read_csv_checked, read_parquet_checked
    from selfheal.pipeline.drift import (
        cap_like_training,
        coerce_features,
        detect_drift,
        predict_batch,
        sample,
        summary,
    )
    from selfheal.pipeline.training import PREDICTION

    params = load_params()
    data = params.data
    model = load_model()
    reference = read_parquet_checked(workspace.REFERENCE, "the train stage writes the drift reference; run `dvc repro`")
    hint = (f"; set data.current in {workspace.PARAMS} to a batch with the columns of the training data "
            f"(data.raw: {data.raw}), e.g. a sample of it")
    batch = read_csv_checked(data.current)
    current_rows = len(batch)
    # only the sampled rows are tested: type, cap and predict just those (the same rows detect_drift would pick)
    current = coerce_features(sample(batch, params.scale.monitor_sample_rows, params.scale.seed), model.features,
                              data.current, hint)
    del batch
    current = cap_like_training(current, model.features, atomic.read_json(workspace.DATA_QUALITY))
    current[PREDICTION] = predict_batch(model.pipeline, current, model.features, data.current)

    metrics, html = detect_drift(
        reference,
        current,
        model.features,
        data.target,
        data.task,
        params.drift_detection.drift_threshold,
        reference_name=str(workspace.REFERENCE),
        current_name=data.current,
        sample_rows=params.scale.monitor_sample_rows,
        seed=params.scale.seed,
        current_rows=current_rows,
    )
    metrics = declared.write(workspace.DRIFT, workspace.DRIFT_METRICS, {**metrics, "model_md5": model.md5},
                             declared.DRIFT)  # heal: which model the measurement describes
    atomic.write_text(workspace.DRIFT_REPORT, html)
    plot = pd.DataFrame(
        [(name, col["drift_score"], col["drifted"]) for name, col in metrics["columns"].items()],
        columns=["column", "drift_score", "drifted"],
    )
    atomic.write_text(workspace.DRIFT_PLOT, plot.to_csv(index=False, lineterminator="\n"))
    print(f"monitor: {summary(metrics)}")


if __name__ == "__main__":
    run_stage(main)
