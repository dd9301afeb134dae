"""DVC stage `train`: fit the model in params.train on data.clean; save the model, the drift reference and the
holdout; log the run, with its holdout scores, to MLflow (SELFHEAL_MLFLOW=0 skips it). What it writes is the same bytes for the same data and
params (no timings, timestamps or run ids): a fresh `make run` leaves git clean."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from selfheal.core import workspace
from selfheal.core.errors import run_main


def main() -> None:
    from selfheal.core import atomic
    from selfheal.core.config import load_params
    from selfheal.pipeline import artifact, metrics, tracking
    from selfheal.pipeline.checks import read_parquet_checked
    from selfheal.pipeline.evaluation import score
    from selfheal.pipeline.training import predict, train

    params = load_params()
    clean = Path(params.data.clean)
    df = read_parquet_checked(clean, "the fix_data stage writes it; run `dvc repro fix_data` first")

    pipeline, meta, reference, holdout = train(df, params, data_md5=atomic.md5_file(clean))
    fit_seconds = meta.pop("fit_seconds")  # a timing: MLflow keeps it, tracked files do not (they would differ every run)
    meta = metrics.rounded(meta)
    names = [f["name"] for f in meta["features"]]
    # the holdout scores validate judges, logged with the run here: validate itself needs no MLflow
    target = params.data.target
    holdout_scores = score(params.data.task, holdout[target], predict(pipeline, holdout[names]))
    logged = {**metrics.flat(meta, metrics.TRAIN), "fit_seconds": fit_seconds,
              **{f"holdout_{k}": v for k, v in holdout_scores.items() if k != "n"}}
    run_id = tracking.log_training(pipeline, meta, logged, sample=reference[names].head(100))
    md5 = artifact.save_model(pipeline, meta, workspace.MODEL)
    tracking.tag_model(run_id, md5)
    for path, frame in ((workspace.REFERENCE, reference), (workspace.HOLDOUT, holdout)):
        atomic.atomic_write(path, partial(frame.to_parquet, index=False))
    atomic.write_json(workspace.TRAIN_METRICS, metrics.flat(meta, metrics.TRAIN))
    print(
        f"train: {meta['model']} on {meta['n_train']} rows, train {meta['metric_name']} {meta['train_score']:.3f} "
        f"(fit {fit_seconds:.1f} s), model md5 {md5[:12]}, "
        + (f"mlflow run {run_id}" if run_id else f"mlflow skipped ({tracking.SWITCH}=0)")
    )


if __name__ == "__main__":
    run_main(main)
