"""DVC stage `train`: fit the model in params.train on data.clean; save the model, the drift reference and the
holdout; log the run to MLflow (SELFHEAL_MLFLOW=0 skips it)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python stages/train.py`: this checkout's package

from selfheal.errors import run_main  # noqa: E402

METRICS_FILE = Path("metrics/train.json")


def main() -> None:
    from selfheal import io as sio
    from selfheal import modelio, tracking
    from selfheal.config import load_params
    from selfheal.tabular import read_parquet_checked
    from selfheal.training import HOLDOUT_FILE, REFERENCE_FILE, train

    params = load_params()
    clean = Path(params.data.clean)
    df = read_parquet_checked(clean, "the fix_data stage writes it; run `dvc repro fix_data` first")

    pipeline, meta, reference, holdout = train(df, params, data_md5=sio.md5_file(clean))
    metrics = {
        "model": meta["model"],
        "metric_name": meta["metric_name"],
        "train_score": meta["train_score"],
        "n_train": meta["n_train"],
        "n_holdout": meta["n_holdout"],
        "fit_seconds": meta["fit_seconds"],
    }
    names = [f["name"] for f in meta["features"]]
    run_id = tracking.log_training(pipeline, meta, metrics, sample=reference[names].head(100))
    md5 = modelio.save_model(pipeline, {**meta, "mlflow_run_id": run_id}, modelio.MODEL_FILE)
    for path, frame in ((REFERENCE_FILE, reference), (HOLDOUT_FILE, holdout)):
        sio.atomic_write(path, lambda tmp, frame=frame: frame.to_parquet(tmp, index=False))
    sio.write_json(METRICS_FILE, metrics)
    print(
        f"train: {meta['model']} on {meta['n_train']} rows, train {meta['metric_name']} {meta['train_score']:.3f} "
        f"(fit {meta['fit_seconds']:.1f} s), model md5 {md5[:12]}, "
        + (f"mlflow run {run_id}" if run_id else f"mlflow skipped ({tracking.SWITCH}=0)")
    )


if __name__ == "__main__":
    run_main(main)
