"""The pipeline for real: `dvc repro` in a temporary git repo, as a user runs it from a fresh clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfheal.ops.sandbox import run

pytestmark = pytest.mark.slow

STAGES = ["fix_data", "train", "validate", "monitor"]
ROOT = Path(__file__).resolve().parents[2]


def test_fresh_repro_runs_every_stage_and_writes_outputs(built_project: Path) -> None:
    for out in [
        "data/clean/housing.parquet",
        "models/model.joblib",
        "models/model.json",
        "models/reference.parquet",
        "metrics/data_quality.json",
        "metrics/validation.json",
        "metrics/drift.json",
        "metrics/records/data_quality.json",
        "metrics/records/validation.json",
        "metrics/records/drift.json",
        "metrics/plots/predictions.csv",
    ]:
        assert (built_project / out).exists(), out
    lock = yaml.safe_load((built_project / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)
    quality = json.loads((built_project / "metrics/records/data_quality.json").read_text())
    assert quality["valid_after"] is True
    validation = json.loads((built_project / "metrics/records/validation.json").read_text())
    assert validation["metric_name"] == "r2" and validation["passed"] is True, validation
    # the raw file is an input only: dvc.lock pins its hash, the stage never rewrites it
    raw_md5 = next(d["md5"] for d in lock["stages"]["fix_data"]["deps"] if d["path"] == "data/raw/housing.csv")
    from selfheal.core.atomic import md5_file

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


def _stage_imports(stage: str) -> set[str]:
    """The selfheal modules a stage runs, transitively (by reading the imports, as a maintainer would)."""
    import ast

    def imports(path: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfheal"):
                for alias in node.names:
                    sub = Path(*f"{node.module}.{alias.name}".split("."))
                    out.add(f"{node.module}.{alias.name}" if (ROOT / sub).with_suffix(".py").exists() else node.module)
        return out

    seen, todo = set(), imports(ROOT / "stages" / f"{stage}.py")
    while todo:
        module = todo.pop()
        path = (ROOT / Path(*module.split("."))).with_suffix(".py")
        if module in seen or not path.exists():
            continue
        seen.add(module)
        todo |= imports(path)
    return seen


def test_editing_a_module_reruns_every_stage_that_imports_it(project: Path) -> None:
    """Stage deps are complete by construction: each stage declares the code folders it runs, so an edit to the
    model artifact module (which train writes with, and validate and monitor load with) dirties all three."""
    importers = {s for s in STAGES if "selfheal.pipeline.artifact" in _stage_imports(s)}
    assert {"train", "validate", "monitor"} <= importers
    module = project / "selfheal/pipeline/artifact.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    changed = set(json.loads(run(["dvc", "status", "--json"], project).stdout))
    assert importers <= changed, changed


def test_dvc_yaml_declares_the_workspace_contracts_outputs() -> None:
    """dvc.yaml and selfheal/core/workspace.py name the same output files (the contract has one meaning)."""
    from selfheal.core import workspace

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = {
        stage: {next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots")
                for o in spec.get(key) or []}
        for stage, spec in stages.items()
    }
    w = workspace
    expected = {
        "fix_data": {"${data.clean}", str(w.DATA_QUALITY), str(w.DATA_QUALITY_METRICS)},
        "train": {str(p) for p in (w.MODEL, w.MODEL_META, w.REFERENCE, w.HOLDOUT, w.TRAIN_METRICS)},
        "validate": {str(p) for p in (w.VALIDATION, w.VALIDATION_METRICS, w.PREDICTIONS_PLOT, w.RESIDUALS_PLOT)},
        "monitor": {str(p) for p in (w.DRIFT, w.DRIFT_METRICS, w.DRIFT_PLOT)},  # not the HTML report: random ids
    }
    assert declared == expected
    metrics = {next(iter(o)) for spec in stages.values() for o in spec.get("metrics") or []}
    assert metrics == {str(p) for p in w.METRICS}  # the records are plain outputs, not metrics
    model = yaml.safe_load((ROOT / "dvc.yaml").read_text())["artifacts"]["model"]
    assert (model["path"], model["type"]) == (str(w.MODEL), "model")
    for stage, spec in stages.items():  # run through the warm stage runner, which is no stage's dep
        assert spec["cmd"] == f"python -m selfheal.ops.stage_runner stages.{stage}"
        assert f"stages/{stage}.py" in spec["deps"] and "selfheal/ops/stage_runner.py" not in spec["deps"]
