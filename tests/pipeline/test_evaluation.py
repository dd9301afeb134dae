"""The validate stage's judgement: scores, the candidate's own verdict and its reasons, and the stage itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selfheal.core import workspace
from selfheal.core.config import parse_params
from selfheal.core.errors import ConfigError
from selfheal.ops.sandbox import run_stage
from selfheal.pipeline import artifact
from selfheal.pipeline.evaluation import against_baseline, plot_frames, score, verdict
from selfheal.pipeline.synth import TARGET, make_housing
from selfheal.pipeline.training import train

ROOT = Path(__file__).resolve().parents[2]


def test_regression_scores() -> None:
    s = score("regression", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 6.0])
    assert s == pytest.approx({"r2": 1 - 4 / 5, "rmse": 1.0, "mae": 0.5, "n": 4})


def test_classification_scores_use_macro_f1_on_any_labels() -> None:
    s = score("classification", ["a", "a", "b", "b"], ["a", "a", "a", "b"])
    # f1(a) = 2*2/(2*2+1) = 0.8, f1(b) = 2*1/(2*1+1) = 2/3; macro = their mean
    assert s == pytest.approx({"accuracy": 0.75, "f1": (0.8 + 2 / 3) / 2, "n": 4})


def test_the_verdict_judges_the_candidate_on_its_own_and_explains_itself() -> None:
    v = verdict("regression", {"r2": 0.8123}, 0.70)
    assert v["passed"] is True and v["metric_name"] == "r2" and v["metric"] == 0.8123 and v["threshold"] == 0.70
    assert v["reasons"] == ["r2 0.812 meets threshold 0.700"] and v["failures"] == []
    assert not any("production" in key for key in v)  # comparing with production is the gate's (versions.gate)


def test_below_threshold_fails() -> None:
    v = verdict("regression", {"r2": 0.62}, 0.70)
    assert v["passed"] is False
    assert v["reasons"][0] == "r2 0.620 below threshold 0.700"


def test_undefined_metric_fails() -> None:
    v = verdict("regression", {"r2": math.nan, "n": 1}, 0.7)
    assert v["passed"] is False and v["reasons"][0] == "r2 is undefined on 1 holdout row(s)"


def test_plot_frames() -> None:
    predictions, residuals = plot_frames("regression", [1.0, 2.0], [1.5, 1.5])
    assert predictions.to_dict("list") == {"actual": [1.0, 2.0], "predicted": [1.5, 1.5]}
    assert residuals.to_dict("list") == {"predicted": [1.5, 1.5], "residual": [-0.5, 0.5]}
    predictions, residuals = plot_frames("classification", ["a", "b"], ["a", "a"])
    assert predictions.to_dict("list") == {"actual": ["a", "b"], "predicted": ["a", "a"]}
    assert list(residuals.columns) == ["predicted", "residual"] and residuals.empty


def test_validate_stage_records_a_failed_verdict_and_exits_zero(tmp_path: Path) -> None:
    """A model below the threshold: the stage writes the verdict and its plots, and leaves acting to heal."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model_validation"]["min_accuracy_threshold"] = 0.99
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    pipeline, meta, _, holdout = train(make_housing(1000, seed=5), parse_params(raw))
    md5 = artifact.save_model(pipeline, meta, tmp_path / workspace.MODEL)
    (tmp_path / workspace.HOLDOUT).parent.mkdir(parents=True)
    holdout.to_parquet(tmp_path / workspace.HOLDOUT, index=False)

    proc = run_stage("validate", tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "metrics/records/validation.json").read_text())
    assert result["passed"] is False and result["task"] == "regression" and result["metric_name"] == "r2"
    assert result["metric"] == result["r2"] > 0.6 and result["rmse"] > 0 and result["mae"] > 0
    assert result["n_holdout"] == 200 and result["model_md5"] == md5
    assert result["failures"][0].endswith("below threshold 0.990")
    assert proc.stdout.startswith("validate: FAILED: r2 ")
    predictions = pd.read_csv(tmp_path / "metrics/plots/predictions.csv")
    residuals = pd.read_csv(tmp_path / "metrics/plots/residuals.csv")
    assert list(predictions.columns) == ["actual", "predicted"] and len(predictions) == 200
    assert list(residuals.columns) == ["predicted", "residual"] and len(residuals) == 200
    assert predictions["actual"].tolist() == pytest.approx(holdout[TARGET].tolist(), abs=1e-5)


# --- the trivial-baseline checks: a model must learn something ---

def _failures(checks: list) -> list[str]:
    return [reason for ok, reason in checks if not ok]


def test_constant_target_fails_even_with_a_perfect_r2() -> None:
    y = [2.5] * 50
    s = score("regression", y, y)
    assert s["r2"] == 1.0  # what let the degenerate model through
    checks, fields = against_baseline("regression", y, y, 0.1)
    v = verdict("regression", s, 0.70, checks)
    assert v["passed"] is False
    assert v["failures"] == ["the target has no variance on the holdout (every value 2.5): nothing to learn"]
    assert fields["baseline_gain"] is None


def test_near_constant_predictions_fail() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(2.0, 1.0, 400)
    flat = y.mean() + 0.001 * (y - y.mean())  # perfectly correlated, but it hardly moves
    failures = _failures(against_baseline("regression", y, flat, 0.1)[0])
    assert any(f.startswith("the model predictions are (near) constant") for f in failures)


def test_regression_must_beat_the_mean_by_the_margin() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(2.0, 1.0, 1000)
    weak = y.mean() + 0.1 * (y - y.mean()) + rng.normal(0, 0.35, 1000)  # removes about 7% of the error
    checks, fields = against_baseline("regression", y, weak, 0.1)
    (failure,) = _failures(checks)
    assert failure.startswith("does not beat the trivial baseline, the holdout mean") and "min 10%" in failure
    assert fields["baseline_gain"] < 0.1
    good = y + rng.normal(0, 0.3, 1000)
    checks, fields = against_baseline("regression", y, good, 0.1)
    assert _failures(checks) == [] and fields["baseline_gain"] == pytest.approx(0.91, abs=0.02)
    assert checks[-1][1].startswith("beats the trivial baseline, the holdout mean")


def test_classification_single_predicted_class_or_no_better_than_the_majority_fails() -> None:
    y = ["a"] * 80 + ["b"] * 20
    failures = _failures(against_baseline("classification", y, ["a"] * 100, 0.1)[0])
    assert failures[0] == "the model predicts a single class ('a') for every holdout row"
    assert "the majority class 'a' (80.0% of the holdout)" in failures[1]
    # 80% accurate without being constant: no better than always saying 'a'
    mixed = ["a"] * 70 + ["b"] * 10 + ["a"] * 10 + ["b"] * 10
    (failure,) = _failures(against_baseline("classification", y, mixed, 0.1)[0])
    assert failure.startswith("does not beat the trivial baseline, the majority class 'a'")
    checks, fields = against_baseline("classification", y, ["a"] * 78 + ["b"] * 2 + ["b"] * 20, 0.1)
    assert _failures(checks) == [] and fields["baseline_metric"] == 0.8 and fields["baseline_gain"] == 0.9


def test_single_class_target_fails() -> None:
    (failure,) = _failures(against_baseline("classification", ["x"] * 10, ["x"] * 10, 0.1)[0])
    assert failure == "the target has a single class on the holdout ('x'): nothing to learn"


def test_min_baseline_gain_is_a_validated_param() -> None:
    assert parse_params({}).model_validation.min_baseline_gain == 0.1
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["model_validation"]["min_baseline_gain"] == 0.1
    with pytest.raises(ConfigError, match="min_baseline_gain"):
        parse_params({"model_validation": {"min_baseline_gain": 2}})
