"""DVC stage `validate`: score the model on the holdout, judge it on its own (threshold, gain over a trivial
baseline, degenerate output) and record the verdict with its reasons. Production is not read here: the gate in
selfheal compares with it. It exits 0 whatever the verdict: acting on it is `make heal`'s job."""

from __future__ import annotations

from functools import partial

from selfheal.core import workspace
from selfheal.core.errors import run_main


def main() -> None:
    from selfheal.core import atomic
    from selfheal.core.config import load_params
    from selfheal.core.errors import DataError, SelfHealError
    from selfheal.pipeline import artifact, metrics
    from selfheal.pipeline.checks import read_parquet_checked
    from selfheal.pipeline.evaluation import against_baseline, plot_frames, score, verdict
    from selfheal.pipeline.training import predict

    params = load_params()
    target, task, mv = params.data.target, params.data.task, params.model_validation
    model = artifact.load_model(workspace.MODEL)
    if model.meta.get("task") != task or model.meta.get("target") != target:
        raise SelfHealError(
            f"{workspace.MODEL_META}: model was trained for {model.meta.get('task')} of {model.meta.get('target')!r}, "
            f"but params say {task} of {target!r}; retrain with `dvc repro train`"
        )
    holdout = read_parquet_checked(workspace.HOLDOUT, "the train stage writes the holdout; run `dvc repro train` first")
    missing = [c for c in [*model.feature_names, target] if c not in holdout.columns]
    if missing:
        raise DataError(f"{workspace.HOLDOUT}: column(s) {missing} missing; the model expects {model.feature_names}")

    y_true = holdout[target]
    y_pred = predict(model.pipeline, holdout[model.feature_names])
    scores = score(task, y_true, y_pred)
    checks, baseline = against_baseline(task, y_true, y_pred, mv.min_baseline_gain)
    result = verdict(task, scores, mv.min_accuracy_threshold, checks)
    n = scores.pop("n")
    record = {"task": task, **result, **scores, **baseline, "n_holdout": n, "model_md5": model.md5}
    metrics.write(workspace.VALIDATION, workspace.VALIDATION_METRICS, record, metrics.VALIDATION)
    predictions, residuals = plot_frames(task, y_true, y_pred)
    for path, frame in ((workspace.PREDICTIONS_PLOT, predictions), (workspace.RESIDUALS_PLOT, residuals)):
        atomic.atomic_write(path, partial(frame.to_csv, index=False))
    print(f"validate: {'PASSED' if result['passed'] else 'FAILED'}: " + "; ".join(result["reasons"]))


if __name__ == "__main__":
    run_main(main)
