"""The model gate's judgement and honest monitoring, end to end: real git, DVC, training and Evidently.

1. A constant target: the pipeline trains a model with R2 1.0 that predicts one value; heal refuses it and
   production keeps serving a model that discriminates.
2. A schema change (a numeric column arrives as text, a column is renamed): heal does not promote the new model
   and escalates; `selfheal promote --accept-schema-change` is the explicit way through.
3. Missing or stale monitoring: heal never calls it healthy; it measures drift again, and does not promote a model
   whose drift it could not measure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.core.atomic import md5_file
from selfheal.core.project import current
from selfheal.pipeline.artifact import load_model
from selfheal.pipeline.synth import make_current, make_housing
from selfheal.pipeline.training import predict
from selfheal.versions import registry
from selfheal.versions.catalog import Versions
from tests.heal_support import model_md5, production_of, read, run, selfheal, set_max_iter
from tests.scenarios.test_heal_scenarios import ROWS, write_csv

pytestmark = pytest.mark.slow


def test_constant_target_model_is_refused_and_production_keeps_serving(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    production = production_of(repo)
    write_csv(repo / "data/raw/housing.csv", make_housing(ROWS, 42).assign(MedHouseVal=2.5))
    proc = selfheal("heal", cwd=repo, check=False)

    validation = read(repo, "metrics/records/validation.json")  # the restored production's own verdict
    assert validation["model_md5"] == production["md5"] and validation["passed"] is True
    candidate = audit.entries(workspace.ROLLBACK_LOG)[-1]
    assert candidate["action"] == "auto_rollback" and candidate["version_restored"] == production["version"]
    assert "the target has no variance on the holdout (every value 2.5)" in proc.stdout
    assert [v.name for v in registry.versions(repo)] == [production["version"]]  # nothing new was registered
    # independently of selfheal's logs: the model in place is production's and does not predict a constant
    assert model_md5(repo) == production["md5"]
    model = load_model(repo / "models/model.joblib")
    predictions = predict(model.pipeline, make_housing(200, 3)[model.feature_names])
    assert predictions.std() > 0.3


def _changed_schema(df):
    """HouseAge as text ("41 yrs", a categorical column) and AveRooms renamed: existing clients would get 422."""
    return df.assign(HouseAge=df["HouseAge"].map(lambda v: f"{v:.0f} yrs")).rename(columns={"AveRooms": "rooms"})


def test_schema_change_is_not_promoted_automatically_until_a_person_accepts_it(promoted: Path, workdir) -> None:
    import os
    import signal

    import psutil
    import requests

    from selfheal.ops.sandbox import set_params
    from tests.servicekit import free_port, service_pid, start_service, stop_all, url_of, wait_status

    repo = workdir(promoted)
    production = production_of(repo)
    recorded = Versions(current(repo), repo).production_record()
    assert recorded is not None and {"name": "HouseAge", "kind": "numeric"} in recorded["features"]
    old_client = make_housing(5, 7).drop(columns=["MedHouseVal"]).iloc[0].to_dict()
    port = free_port()
    set_params(repo, service_recovery={"service_url": url_of(port), "backoff_seconds": 0.1, "warm_standby": False})
    write_csv(repo / "data/raw/housing.csv", _changed_schema(make_housing(ROWS, 42)))
    write_csv(repo / "data/current/housing.csv", _changed_schema(make_current(800, 0.0, 42)))
    try:
        start_service(repo, port)
        wait_status(url_of(port))
        proc = selfheal("heal", cwd=repo, check=False)
        assert proc.returncode == 1, proc.stdout
        assert model_md5(repo) != production["md5"]  # the unpromoted candidate is in the workspace
        os.kill(service_pid(repo), signal.SIGKILL)  # the service crashes; recovery restarts it
        selfheal("recover", "--method", "process", cwd=repo)
        assert wait_status(url_of(port), timeout=30)["model_md5"] == production["md5"]  # production, not the candidate
        answer = requests.post(url_of(port) + "/predict", json=old_client, timeout=10)
        assert answer.status_code == 200 and answer.json()["model_md5"] == production["md5"]
        service = psutil.Process(service_pid(repo))
        service.terminate()  # the operator stops it (SIGTERM): heal leaves a stopped service alone
        service.wait(30)
    finally:
        stop_all(repo)
    assert "column 'HouseAge' was numeric, now categorical" in proc.stdout
    assert "column(s) ['AveRooms'] no longer taken" in proc.stdout and "new column(s) ['rooms']" in proc.stdout
    assert "--accept-schema-change" in proc.stdout
    assert production_of(repo) == production
    assert [v.name for v in registry.versions(repo)] == ["v0.0.1"]
    (alert,) = audit.entries(workspace.ALERTS_LOG)
    assert alert["kind"] == "heal_escalation_model" and "HouseAge" in alert["reason"]

    refused = selfheal("promote", cwd=repo, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "input schema differs from production v0.0.1" in refused.stderr

    selfheal("promote", "--accept-schema-change", cwd=repo)
    now = Versions(current(repo), repo).production_record()
    assert now is not None and now["version"] == "v0.0.2" and now["md5"] == model_md5(repo)
    assert production_of(repo) == {"version": "v0.0.2", "md5": now["md5"]}
    assert {"name": "HouseAge", "kind": "categorical"} in now["features"]
    assert {"name": "rooms", "kind": "numeric"} in now["features"]
    promoted_entry = audit.entries(workspace.HEAL_LOG)[-1]
    assert promoted_entry["action"] == "promote" and "--accept-schema-change" in promoted_entry["reason"]
    assert "column 'HouseAge' was numeric, now categorical" in promoted_entry["accepted_schema_change"]
    assert read(repo, "metrics/records/validation.json")["passed"] is True  # its own verdict never depended on production
    after = selfheal("heal", cwd=repo)
    assert "heal: healthy" in after.stdout


def test_missing_drift_report_is_measured_again_not_healthy(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    (repo / "metrics/records/drift.json").unlink()
    proc = selfheal("heal", cwd=repo)
    assert "heal: healthy" not in proc.stdout
    assert "metrics/records/drift.json is missing" in proc.stdout
    drift = read(repo, "metrics/records/drift.json")
    assert drift["model_md5"] == md5_file(repo / "models/model.joblib") and "drift_detected" in drift
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    assert "heal: healthy" in selfheal("heal", cwd=repo).stdout


def test_no_promotion_while_drift_cannot_be_measured(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    set_max_iter(repo, 150)  # a new candidate that passes; the monitor has not seen it
    run(["dvc", "repro", "validate"], repo)
    assert read(repo, "metrics/records/validation.json")["passed"] is True
    batch = repo / "data/current/housing.csv"
    saved = batch.read_bytes()
    batch.write_text("not,a\nbatch\n")  # the monitor stage fails on it

    proc = selfheal("heal", cwd=repo, check=False)
    assert proc.returncode == 1 and "heal: healthy" not in proc.stdout
    assert "describes model" in proc.stdout and "not promoted until drift is measured" in proc.stdout
    assert production_of(repo)["version"] == "v0.0.1"
    assert [v.name for v in registry.versions(repo)] == ["v0.0.1"]

    batch.write_bytes(saved)  # monitoring works again: drift is measured, then the candidate is promoted
    proc = selfheal("heal", cwd=repo)
    assert read(repo, "metrics/records/drift.json")["model_md5"] == model_md5(repo)
    assert production_of(repo)["version"] == "v0.0.2"


def test_a_persons_rollback_sticks_until_they_promote_again(two_versions: Path, workdir) -> None:
    """A person rolls production back from v0.0.2 to v0.0.1; `dvc repro` then rebuilds v0.0.2's very bytes (same
    data, params and code), and heal leaves them alone instead of promoting them again; `selfheal promote` is
    the person's way back."""
    repo = workdir(two_versions)
    assert production_of(repo)["version"] == "v0.0.2"
    v2 = model_md5(repo)
    selfheal("rollback", "--version", "v0.0.1", cwd=repo)
    assert production_of(repo)["version"] == "v0.0.1"
    run(["dvc", "repro"], repo)
    assert model_md5(repo) == v2  # the replaced model, rebuilt

    healed = selfheal("heal", cwd=repo)
    assert production_of(repo)["version"] == "v0.0.1"  # the person's choice stands
    assert "which a person rolled back from" in healed.stdout and "heal: healthy" not in healed.stdout
    assert "promote" not in [line.split()[2] for line in healed.stdout.splitlines() if line.startswith("heal: gate")]

    selfheal("promote", cwd=repo)
    assert production_of(repo)["version"] == "v0.0.2" and model_md5(repo) == v2
    assert audit.read(repo / workspace.HELD_BACK, {}) == {}  # the hold is lifted: heal may promote it again
