"""The guide's self-healing scenarios, end to end, as a user runs them: real git, DVC, training and Evidently.

1. Data with missing values, outliers, duplicates and dtype mismatches: `selfheal heal` reruns the pipeline,
   fix_data heals the data, the new model passes and is promoted.
2. A candidate below the threshold: heal rolls it back, the model file is byte-identical to the earlier version;
   `selfheal rollback --version` restores a named older version.
3. Drift: one retrain, a second drift inside the cooldown does nothing, --force retrains; a retrain that produces
   a worse model ends with the previous model still in production.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfheal.core import audit, workspace
from selfheal.core.atomic import atomic_write, md5_file
from selfheal.pipeline.synth import inject_faults, make_current, make_housing
from selfheal.versions import registry, vcs
from tests.heal_support import model_md5, production_of, read, run, selfheal, set_max_iter

pytestmark = pytest.mark.slow
ROWS = 3000  # tests/conftest.py SMALL_SYNTH


def write_csv(path: Path, df) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))


def model_from_cache(repo: Path, version: str) -> bytes:
    md5 = registry.find(version, registry.versions(repo)).md5
    return (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()


def test_1_dirty_data_is_healed_and_the_pipeline_passes(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    # the same rows with other (and more) faults: healed, they train a model as good as production's
    dirty = inject_faults(make_housing(ROWS, 42), missing=0.015, outliers=0.003, duplicates=0.01,
                          dtype_errors=0.003, seed=7)
    write_csv(repo / "data/raw/housing.csv", dirty)
    raw_md5 = md5_file(repo / "data/raw/housing.csv")
    proc = selfheal("heal", cwd=repo)
    fix = audit.entries(workspace.DATA_FIX_LOG)[-1]
    assert fix["success"] is True and fix["problems_before"] > 0 and fix["problems_after"] == 0
    lines = "\n".join(fix["fixes"])
    for expected in ("Filled MedInc missing values with median:", "outliers in", "Removed 30 duplicate rows",
                     "text values in"):
        assert expected in lines, lines
    assert "✅ Removed 30 duplicate rows" in proc.stdout
    assert read(repo, "metrics/records/data_quality.json")["valid_after"] is True
    assert read(repo, "metrics/validation.json")["passed"] is True
    assert production_of(repo)["version"] == "v0.0.2"  # the healed data's model, promoted
    assert md5_file(repo / "data/raw/housing.csv") == raw_md5  # the pipeline never rewrites its input
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}


def test_2_bad_candidate_is_rolled_back_then_a_named_version_restored(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    out = selfheal("heal", cwd=repo).stdout
    assert "below threshold 0.70" in out and "Rolling back to v0.0.2" in out and "Successfully rolled back" in out
    assert (repo / "models/model.joblib").read_bytes() == model_from_cache(repo, "v0.0.2")
    selfheal("rollback", "--version", "v0.0.1", cwd=repo)
    assert (repo / "models/model.joblib").read_bytes() == model_from_cache(repo, "v0.0.1")
    assert production_of(repo)["version"] == "v0.0.1"
    auto, manual = audit.entries(workspace.ROLLBACK_LOG)
    for entry in (auto, manual):
        assert {"timestamp", "action", "reason", "success", "version_restored", "failed_version",
                "failed_md5", "restored_md5"} <= set(entry)
    assert (auto["action"], auto["version_restored"], manual["action"], manual["version_restored"]) == (
        "auto_rollback", "v0.0.2", "manual_rollback", "v0.0.1")
    assert manual["failed_version"] == "v0.0.2"


def test_3_drift_retrains_once_respects_the_cooldown_and_never_keeps_a_worse_model(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    write_csv(repo / "data/current/housing.csv", make_current(800, 1.0, 42))
    run(["dvc", "repro"], repo)  # only monitor reruns: the batch drifted
    assert read(repo, "metrics/drift.json")["drift_detected"] is True
    raw_before = md5_file(repo / "data/raw/housing.csv")

    out = selfheal("heal", cwd=repo).stdout  # drift -> one retrain, the better model promoted
    assert "Data drift detected! Score:" in out and "Retraining completed successfully" in out
    log = read(repo, str(workspace.RETRAINING_LOG))
    (first,) = log["history"]
    assert first["action"] == "auto_retrain" and first["outcome"] == "promoted" and first["rows_added"] == 800
    assert log["last_retrain_time"] == first["started_at"] and first["version"] == "v0.0.2"
    assert md5_file(repo / "data/raw/housing.csv") != raw_before  # the batch was folded into the training data
    # ... and versioned: the promotion's commit pins the folded raw data, and the DVC cache holds it
    versioned = yaml.safe_load(run(["git", "show", "model@v0.0.2:data/raw/housing.csv.dvc"], repo).stdout)
    assert versioned["outs"][0]["md5"] == md5_file(repo / "data/raw/housing.csv")
    assert vcs.cache_path(versioned["outs"][0]["md5"], repo).is_file()

    again = selfheal("retrain", "--drift-detected", "--drift-score", "0.85", cwd=repo)  # inside the cooldown
    assert "in cooldown until" in again.stdout and len(read(repo, str(workspace.RETRAINING_LOG))["history"]) == 1
    assert "drift   skip" in selfheal("heal", "--plan", cwd=repo).stdout

    forced = selfheal("retrain", "--drift-detected", "--drift-score", "0.85", "--force", cwd=repo, check=False)
    assert "--force: cooldown skipped" in forced.stdout and "Nothing new to train on" in forced.stdout
    history = read(repo, str(workspace.RETRAINING_LOG))["history"]
    assert len(history) == 2 and history[1]["action"] == "forced_retrain" and history[1]["rows_added"] == 0
    assert forced.returncode == 1 and history[1]["outcome"] == "nothing_new"  # the batch is in already

    production = production_of(repo)
    raw, drift = md5_file(repo / "data/raw/housing.csv"), (repo / "metrics/drift.json").read_bytes()
    set_max_iter(repo, 1)  # the next retrain produces a much worse model
    worse = selfheal("retrain", "--force", cwd=repo, check=False)
    assert worse.returncode == 1 and "Rolling back to v0.0.2" in worse.stdout
    assert production_of(repo) == production and model_md5(repo) == production["md5"]
    assert md5_file(repo / "data/raw/housing.csv") == raw and (repo / "metrics/drift.json").read_bytes() == drift
    assert yaml.safe_load((repo / "data/raw/housing.csv.dvc").read_text()) == versioned  # the fold undone, its .dvc too
    last = read(repo, str(workspace.RETRAINING_LOG))["history"][-1]
    assert last["outcome"] == "rolled_back" and last["success"] is False and last["production"] == "v0.0.2"
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert list(status) == ["train"], status  # only the params the user changed differ from production
    assert [v.name for v in registry.versions(repo)] == ["v0.0.1", "v0.0.2"]
    assert vcs.git("status", "--porcelain", "--", "data", cwd=repo) == ""
