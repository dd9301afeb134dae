"""MLflow agrees with GTO: each trained model is a run with its holdout metrics, an input example and tags naming
the DVC experiment and commit; promote and rollback register production's model and move the `prod` alias, and
a refused candidate's run says why. Read back through
MlflowClient on the project's own sqlite store, with real `dvc repro`, promote and rollback runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfheal.core.atomic import md5_file
from selfheal.ops import sandbox
from selfheal.pipeline import tracking
from tests.heal_support import read, set_max_iter

pytestmark = pytest.mark.slow


def _client(repo: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def _run_of(repo: Path) -> str | None:
    """The run that made the workspace model: tagged with the model's md5 (tracked files hold no run id)."""
    md5 = md5_file(repo / "models/model.joblib")
    experiment = _client(repo).get_experiment_by_name(tracking.EXPERIMENT)
    runs = _client(repo).search_runs([experiment.experiment_id], f"tags.`{tracking.MODEL_TAG}` = '{md5}'")
    return runs[0].info.run_id if runs else None


def _prod(repo: Path) -> str:
    mv = _client(repo).get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.PROD_ALIAS)
    return mv.run_id


def test_promote_and_rollback_move_the_mlflow_alias(project: Path) -> None:
    repo = project
    run_v1 = _run_of(repo)
    client = _client(repo)
    run = client.get_run(run_v1)
    # the holdout scores validate judged, logged by train beside the train score; tags link the run to git
    validation = read(repo, "metrics/validation.json")
    for key in ("r2", "rmse", "mae"):
        assert run.data.metrics[f"holdout_{key}"] == pytest.approx(validation[key], abs=1e-3)  # rounded there
    assert "train_score" in run.data.metrics
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    model_dir = next((repo / "mlartifacts").rglob("MLmodel")).parent
    example = json.loads((model_dir / "input_example.json").read_text())
    assert set(example["columns"]) == {f["name"] for f in read(repo, "models/model.json")["features"]}

    sandbox.run(["selfheal", "promote"], repo)
    assert _prod(repo) == run_v1
    assert read(repo, "monitoring/heal_log.json")[-1]["mlflow_version"] == "1"

    set_max_iter(repo, 120)
    sandbox.run(["dvc", "exp", "run", "-n", "fewer-rounds"], repo)  # in the workspace: DVC_EXP_NAME reaches the run
    run_v2 = _run_of(repo)
    assert client.get_run(run_v2).data.tags["selfheal.dvc_exp"] == "fewer-rounds"
    sandbox.run(["selfheal", "promote"], repo)
    assert _prod(repo) == run_v2 != run_v1
    version = client.get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.PROD_ALIAS)
    assert version.tags["selfheal.version"] == "v0.0.2"
    assert client.get_run(run_v2).data.tags[tracking.VERDICT_TAG] == "production v0.0.2"

    # a candidate the gate refuses stays a run, tagged with why; the registry holds production's versions only
    set_max_iter(repo, 60)
    sandbox.set_params(repo, model_validation={"min_accuracy_threshold": 0.99})
    sandbox.run(["dvc", "repro"], repo)
    refused = _run_of(repo)
    sandbox.run(["selfheal", "rollback"], repo)
    assert _prod(repo) == run_v2
    assert client.get_run(refused).data.tags[tracking.VERDICT_TAG].startswith("refused: ")
    registered = client.search_model_versions(f"name='{tracking.REGISTERED_MODEL}'")
    assert sorted(v.run_id for v in registered) == sorted([run_v1, run_v2])

    sandbox.run(["selfheal", "rollback", "--version", "v0.0.1"], repo)
    assert _prod(repo) == run_v1
    assert read(repo, "models/rollback_log.json")[-1]["mlflow_version"] == "1"


def test_without_a_linked_run_promote_leaves_mlflow_alone(project: Path) -> None:
    set_max_iter(project, 77)  # other bytes than any run in the store made
    sandbox.run(["dvc", "repro", "validate"], project, extra_env={tracking.SWITCH: "0"})
    assert _run_of(project) is None
    out = sandbox.run(["selfheal", "promote"], project).stdout
    assert "MLflow" not in out
    assert read(project, "monitoring/heal_log.json")[-1]["mlflow_version"] is None
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException):
        _client(project).get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.PROD_ALIAS)
