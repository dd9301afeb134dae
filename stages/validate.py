"""DVC stage `validate`: score the model on the holdout, compare it with the threshold and the production model,
and record the verdict with its reasons. It exits 0 whatever the verdict: acting on it is `make heal`'s job."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python stages/validate.py`: this checkout's package

from selfheal.errors import run_main  # noqa: E402

METRICS_FILE = Path("metrics/validation.json")
PREDICTIONS_PLOT = Path("metrics/plots/predictions.csv")
RESIDUALS_PLOT = Path("metrics/plots/residuals.csv")


def main() -> None:
    from selfheal import io as sio
    from selfheal import modelio, registry
    from selfheal.config import load_params
    from selfheal.errors import DataError, SelfHealError
    from selfheal.evaluation import plot_frames, score, verdict
    from selfheal.tabular import read_parquet_checked
    from selfheal.training import HOLDOUT_FILE, predict

    params = load_params()
    target, task, mv = params.data.target, params.data.task, params.model_validation
    model = modelio.load_model(modelio.MODEL_FILE)
    if model.meta.get("task") != task or model.meta.get("target") != target:
        raise SelfHealError(
            f"{modelio.META_FILE}: model was trained for {model.meta.get('task')} of {model.meta.get('target')!r}, "
            f"but params say {task} of {target!r}; retrain with `dvc repro train`"
        )
    holdout = read_parquet_checked(HOLDOUT_FILE, "the train stage writes the holdout; run `dvc repro train` first")
    missing = [c for c in [*model.feature_names, target] if c not in holdout.columns]
    if missing:
        raise DataError(f"{HOLDOUT_FILE}: column(s) {missing} missing; the model expects {model.feature_names}")

    y_true = holdout[target]
    y_pred = predict(model.pipeline, holdout[model.feature_names])
    scores = score(task, y_true, y_pred)
    result = verdict(task, scores, mv.min_accuracy_threshold, mv.max_relative_drop, registry.production())
    n = scores.pop("n")
    sio.write_json(
        METRICS_FILE,
        {"task": task, **result, **scores, "n_holdout": n, "model_md5": model.md5},
    )
    predictions, residuals = plot_frames(task, y_true, y_pred)
    for path, frame in ((PREDICTIONS_PLOT, predictions), (RESIDUALS_PLOT, residuals)):
        sio.atomic_write(path, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    print(f"validate: {'PASSED' if result['passed'] else 'FAILED'}: " + "; ".join(result["reasons"]))


if __name__ == "__main__":
    run_main(main)
