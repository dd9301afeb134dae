"""DVC stage `monitor`: data and prediction drift of data.current against the training reference.

Reads models/model.joblib (+ model.json), models/reference.parquet, the fences fix_data capped the training data
at (the data quality record: the batch is capped the same way before it is compared) and every row of the
current batch, streamed partition by partition on scale.engine; writes the drift record (per column, and which
model it describes), its declared metrics and metrics/plots/drift.csv, and prints a one-line verdict. Evidently's
HTML report of the same comparison is `selfheal drift-report`'s, on demand.
"""

from __future__ import annotations

from selfheal.core.errors import run_main


def main() -> None:
    import pandas as pd

    from selfheal.core import atomic, workspace
    from selfheal.core.config import load_params
    from selfheal.pipeline import metrics as declared
    from selfheal.pipeline.drift import monitored, summary, verdicts

    params = load_params()
    seen = monitored(params)
    metrics = verdicts(seen.reference, seen.current, [f["name"] for f in seen.model.features], seen.kinds,
                       params.data.target, params.drift_detection.drift_threshold)
    metrics = declared.write(workspace.DRIFT, workspace.DRIFT_METRICS, {**metrics, "model_md5": seen.model.md5},
                             declared.DRIFT)  # heal: which model the measurement describes
    plot = pd.DataFrame(
        [(name, col["drift_score"], col["drifted"]) for name, col in metrics["columns"].items()],
        columns=["column", "drift_score", "drifted"],
    )
    atomic.write_text(workspace.DRIFT_PLOT, plot.to_csv(index=False, lineterminator="\n"))
    print(f"monitor: {summary(metrics)}")


if __name__ == "__main__":
    run_main(main)
