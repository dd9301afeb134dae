"""Data fixes that converge and retrains that tell the truth, end to end on real git + DVC sandboxes.

1. double fix-data: a second `selfheal fix-data` on its own output changes nothing and says so, and capping
   never leaves the file invalid; heal then runs without escalating.
2. retrain after fix-data: the batch's copies of rows of the rewritten raw file are not folded in again.
3. no-op retrain: a forced retrain with nothing new says so, promotes nothing, starts no cooldown; heal explains
   why drift persists instead of retraining again.
4. `dvc exp apply` then `selfheal retrain --force`: the uncached drift report it deleted does not block the undo;
   a retrain that fails does not start the cooldown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selfheal.core import audit, workspace
from selfheal.core.atomic import md5_file
from selfheal.pipeline.checks import infer_schema, read_csv_checked, validate
from selfheal.pipeline.synth import inject_faults, make_current, make_housing
from selfheal.versions import registry
from tests.heal_support import model_md5, production_of, read, run, selfheal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # two dvc repro runs each, on shared cores
ROWS = 3000  # tests/conftest.py SMALL_SYNTH
RAW, CURRENT = Path("data/raw/housing.csv"), Path("data/current/housing.csv")


def retrain_log(repo: Path) -> dict:
    return read(repo, str(workspace.RETRAINING_LOG))


def near_duplicates(frame: pd.DataFrame) -> int:
    """Rows equal to another one to 6 decimals, counted independently of selfheal's own checks."""
    return int(frame.round(6).duplicated().sum())


def test_double_fix_data_is_a_no_op_and_heal_accepts_the_result(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    dirty = inject_faults(make_housing(ROWS, 42), missing=0.03, outliers=0.01, duplicates=0.01,
                          dtype_errors=0.005, seed=9)
    twin = dirty.iloc[[5]].assign(Population=2e7)  # row 5 but for an outlier: capping makes the two one row
    dirty = pd.concat([dirty.assign(Population=lambda d: d.Population.where(d.index != 5, 1e7)), twin])
    dirty.to_csv(repo / RAW, index=False)

    first = selfheal("fix-data", cwd=repo)
    fixed = (repo / RAW).read_bytes()
    assert "outliers in Population" in first.stdout
    second = selfheal("fix-data", cwd=repo)
    assert f"No issues to fix: {RAW} unchanged" in second.stdout and (repo / RAW).read_bytes() == fixed
    df = read_csv_checked(repo / RAW)
    assert validate(df, infer_schema(df, "MedHouseVal")) == []
    assert near_duplicates(pd.read_csv(repo / RAW)) == 0
    assert [e["changes"] > 0 for e in audit.entries(workspace.DATA_FIX_LOG)] == [True, False]

    selfheal("heal", cwd=repo)  # the pipeline runs on the fixed file: nothing left to fix, nothing to escalate
    assert read(repo, "metrics/records/data_quality.json")["problems_before"] == 0
    again = selfheal("heal", cwd=repo)
    assert "escalate" not in again.stdout and not (repo / workspace.ALERTS_LOG).exists()


def test_retrain_after_fix_data_folds_only_rows_the_raw_file_lacks(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    selfheal("fix-data", cwd=repo)  # rewrites data/raw in place (numbers as floats)
    fixed = pd.read_csv(repo / RAW)
    copies = fixed.sample(300, random_state=1)  # rows the raw file holds, written with 12 significant digits
    pd.concat([make_current(800, 1.0, 42), copies]).to_csv(repo / CURRENT, index=False, float_format="%.12g")

    selfheal("retrain", "--drift-detected", cwd=repo)  # one dvc repro: the fixed raw file plus the new rows
    (entry,) = retrain_log(repo)["history"]
    assert entry["rows_added"] == 800 and entry["outcome"] == "promoted"
    assert len(pd.read_csv(repo / RAW)) == len(fixed) + 800
    quality = read(repo, "metrics/records/data_quality.json")
    assert quality["valid_after"] is True and quality["duplicates_removed"] == 0
    clean = pd.read_parquet(repo / "data/clean/housing.parquet")
    assert near_duplicates(clean) == 0  # nothing that could leak from the training rows into the holdout


def test_a_no_op_retrain_says_so_and_heal_explains_persisting_drift(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    make_current(800, 1.0, 42).to_csv(repo / CURRENT, index=False)
    run(["dvc", "repro"], repo)
    selfheal("retrain", cwd=repo)
    log = retrain_log(repo)
    assert log["history"][-1]["outcome"] == "promoted" and read(repo, "metrics/records/drift.json")["drift_detected"]
    versions = [v.name for v in registry.versions(repo)]

    forced = selfheal("retrain", "--force", cwd=repo, check=False)
    assert forced.returncode == 1 and "Nothing new to train on" in forced.stdout
    assert "Retraining completed successfully" not in forced.stdout and "Promoted" not in forced.stdout
    assert [v.name for v in registry.versions(repo)] == versions
    after = retrain_log(repo)
    assert after["history"][-1]["outcome"] == "nothing_new" and after["last_retrain_time"] == log["last_retrain_time"]

    # a day later heal does not retrain on the same batch again: it explains why the drift persists
    past = (datetime.now(UTC) - timedelta(hours=25)).replace(microsecond=0).isoformat()
    audit.update(workspace.RETRAINING_LOG, lambda d: {**d, "last_retrain_time": past}, default={})
    plan = selfheal("heal", "--plan", cwd=repo).stdout
    assert "drift   report" in plan and f"{versions[-1]} was already trained on this batch" in plan


def test_exp_apply_then_forced_retrain_undoes_cleanly_and_failures_keep_the_cooldown(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    make_current(800, 1.0, 42).to_csv(repo / CURRENT, index=False)
    run(["dvc", "repro"], repo)
    run(["dvc", "exp", "run", "--name", "tiny", "-S", "train.hist_gradient_boosting.max_iter=1"], repo)
    run(["dvc", "exp", "apply", "tiny"], repo)
    assert not (repo / workspace.DRIFT_REPORT).exists()  # what `dvc exp apply` does to an uncached output
    production, raw = production_of(repo), md5_file(repo / RAW)

    proc = selfheal("retrain", "--force", cwd=repo, check=False)
    assert proc.returncode == 1 and "nothing was changed" not in proc.stdout + proc.stderr
    assert model_md5(repo) == production["md5"] and md5_file(repo / RAW) == raw
    log = retrain_log(repo)
    (entry,) = log["history"]
    assert entry["outcome"] == "rolled_back" and entry["production"] == production["version"]
    assert log["last_retrain_time"] == entry["started_at"]

    # a retrain that fails (here: train cannot split a continuous target by class) never starts the cooldown
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["task"] = "classification"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = selfheal("retrain", "--force", cwd=repo, check=False)
    assert failed.returncode == 1 and "Retraining failed: dvc repro failed" in failed.stderr
    assert "Retraining completed successfully" not in failed.stdout
    log = retrain_log(repo)
    assert log["history"][-1]["outcome"] == "failed" and log["history"][-1]["error"]
    assert log["last_retrain_time"] == entry["started_at"]
    assert model_md5(repo) == production["md5"] and md5_file(repo / RAW) == raw
