"""The pipeline for real: `dvc repro` in a temporary git repo, as a user runs it from a fresh clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfheal.sandbox import run

pytestmark = pytest.mark.slow

STAGES = ["fix_data", "train", "validate", "monitor"]


def test_fresh_repro_runs_every_stage_and_writes_outputs(built_project: Path) -> None:
    for out in [
        "data/clean/housing.parquet",
        "models/model.joblib",
        "models/model.json",
        "models/reference.parquet",
        "metrics/data_quality.json",
        "metrics/validation.json",
        "metrics/drift.json",
        "monitoring/drift_report.html",
        "metrics/plots/predictions.csv",
    ]:
        assert (built_project / out).exists(), out
    lock = yaml.safe_load((built_project / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    quality = json.loads((built_project / "metrics/data_quality.json").read_text())
    assert quality["valid_after"] is True
    validation = json.loads((built_project / "metrics/validation.json").read_text())
    assert validation["metric_name"] == "r2" and validation["passed"] is True, validation
    # the raw file is an input only: dvc.lock pins its hash, the stage never rewrites it
    raw_md5 = next(d["md5"] for d in lock["stages"]["fix_data"]["deps"] if d["path"] == "data/raw/housing.csv")
    from selfheal.io import md5_file

    assert md5_file(built_project / "data/raw/housing.csv") == raw_md5


def test_second_repro_does_nothing(project: Path) -> None:
    proc = run(["dvc", "repro"], project)
    assert "Data and pipelines are up to date" in proc.stdout, proc.stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" not in proc.stdout
    status = run(["dvc", "status", "--json"], project)
    assert json.loads(status.stdout) == {}


def test_exp_run_with_a_train_param_is_listed_by_exp_show(project: Path) -> None:
    proc = run(["dvc", "exp", "run", "-n", "linear-try", "-S", "train.model=linear"], project)
    # only what depends on train params reruns
    assert "Running stage 'fix_data'" not in proc.stdout
    assert "Running stage 'train'" in proc.stdout
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    head = next(rev for rev in shown if rev.get("experiments"))
    exps = {exp["name"]: exp for exp in head["experiments"]}
    assert "linear-try" in exps, shown
    data = exps["linear-try"]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["model"] == "linear"
    r2 = data["metrics"]["metrics/validation.json"]["data"]["r2"]
    baseline = head["data"]["metrics"]["metrics/validation.json"]["data"]["r2"]
    assert r2 < baseline  # the linear baseline really ran, and is weaker than boosting


def test_metrics_and_plots_diff_work_after_a_param_change(project: Path) -> None:
    run(["dvc", "exp", "run", "-S", "train.model=linear"], project)  # applied to the workspace
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], project).stdout)
    assert "metrics/validation.json" in diff and "r2" in diff["metrics/validation.json"]
    params = json.loads(run(["dvc", "params", "diff", "--json"], project).stdout)
    assert params["params.yaml"]["train.model"]["new"] == "linear"
    out = run(["dvc", "plots", "diff", "-o", "plots_out"], project)
    assert (project / "plots_out" / "index.html").exists(), out.stdout
