"""MLflow tracking against a real embedded SQLite store (the default a user gets), and its off switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfheal.core.config import parse_params
from selfheal.core.errors import SelfHealError
from selfheal.pipeline import tracking
from selfheal.pipeline.synth import TARGET, make_housing
from selfheal.pipeline.training import predict, train


@pytest.fixture(scope="module")
def trained():
    params = parse_params({"data": {"target": TARGET}, "train": {"hist_gradient_boosting": {"max_iter": 30}}})
    pipeline, meta, reference, _ = train(make_housing(600, seed=11), params)
    sample = reference[[f["name"] for f in meta["features"]]].head(20)
    return pipeline, {**meta, "data_md5": "d" * 32}, sample


def test_run_is_logged_to_the_default_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    pipeline, meta, sample = trained
    run_id = tracking.log_training(pipeline, meta, {"train_score": 0.9, "n_train": 480, "model": "hgb"}, sample)

    import mlflow.sklearn
    from mlflow.tracking import MlflowClient

    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=tracking.DEFAULT_URI)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "selfheal"
    assert run.data.params["model"] == "hist_gradient_boosting" and run.data.params["max_iter"] == "30"
    assert run.data.params["seed"] == "42" and run.data.params["target"] == TARGET
    assert run.data.metrics == {"train_score": 0.9, "n_train": 480.0}  # non-numeric values are params, not metrics
    assert run.data.tags["selfheal.data_md5"] == "d" * 32
    # the logged model is a working copy of the trained one, stored under ./mlartifacts
    logged = mlflow.sklearn.load_model(f"runs:/{run_id}/model")
    np.testing.assert_array_equal(logged.predict(sample), predict(pipeline, sample))
    assert list((tmp_path / "mlartifacts").rglob("MLmodel"))


def test_run_is_tagged_with_its_holdout_metrics_and_registered_only_when_it_reaches_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # an absolute URI: MLflow caches stores by URI within a process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    monkeypatch.setenv(tracking.EXP_NAME_ENV, "wiser-newt")
    pipeline, meta, sample = trained
    run_id, refused_id = (
        tracking.log_training(pipeline, meta, {"train_score": 0.9, "holdout_r2": 0.81, "holdout_rmse": 0.5}, sample)
        for _ in range(2))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.data.metrics == {"train_score": 0.9, "holdout_r2": 0.81, "holdout_rmse": 0.5}
    assert run.data.tags["selfheal.dvc_exp"] == "wiser-newt"
    assert "mlflow.source.git.commit" not in run.data.tags  # tmp_path is no git repo: no made-up commit
    assert client.search_model_versions(f"name='{tracking.REGISTERED_MODEL}'") == []  # candidates stay runs

    assert tracking.set_production_alias(run_id, "v0.0.1", tmp_path) == "1"
    tracking.tag_refused(refused_id, "r2 0.41 below the threshold 0.70", tmp_path)
    assert tracking.set_production_alias(run_id, "v0.0.1", tmp_path) == "1"  # registered once
    (version,) = client.search_model_versions(f"name='{tracking.REGISTERED_MODEL}'")
    assert version.run_id == run_id and version.tags["selfheal.version"] == "v0.0.1"
    assert client.get_model_version_by_alias(tracking.REGISTERED_MODEL, tracking.PROD_ALIAS).run_id == run_id
    assert client.get_run(run_id).data.tags[tracking.VERDICT_TAG] == "production v0.0.1"
    assert client.get_run(refused_id).data.tags[tracking.VERDICT_TAG] == "refused: r2 0.41 below the threshold 0.70"
    import mlflow.artifacts

    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}",
                                                         dst_path=str(tmp_path / "dl"), tracking_uri=uri))
    assert (model_dir / "input_example.json").is_file()


def test_switch_off_skips_tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.SWITCH, "0")
    assert tracking.log_training(*trained[:2], {"train_score": 0.9}, trained[2]) is None
    assert list(tmp_path.iterdir()) == []


def test_tracking_uri_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_unusable_store_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a-file/mlflow.db")
    with pytest.raises(SelfHealError, match=r"MLflow logging to sqlite:///.* failed .*set SELFHEAL_MLFLOW=0"):
        tracking.log_training(*trained[:2], {"train_score": 0.9}, trained[2])


def test_a_new_store_starts_from_the_environments_migrated_empty_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: tuple
) -> None:
    """MLflow's schema migrations (a quarter of train on a fresh clone) run once per environment; each
    new store is a copy of that migrated empty store, which MLflow opens, verifies and writes as its own."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from selfheal.core import workspace

    monkeypatch.setattr(workspace, "MLFLOW_TEMPLATES", tmp_path / "env-share")
    monkeypatch.delenv(tracking.SWITCH, raising=False)
    pipeline, meta, sample = trained
    for name in ("first", "second"):
        project = tmp_path / name
        project.mkdir()
        monkeypatch.chdir(project)
        uri = f"sqlite:///{project}/mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_id = tracking.log_training(pipeline, meta, {"train_score": 0.9}, sample)
        client = MlflowClient(tracking_uri=uri)
        assert client.get_run(run_id).data.metrics == {"train_score": 0.9}
        assert [e.name for e in client.search_experiments(order_by=["name"])] == ["Default", "selfheal"]
        assert client.search_registered_models() == []  # a run is registered when it reaches production
    (template,) = (tmp_path / "env-share").glob("mlflow-*.db")
    with sqlite3.connect(template) as db:  # the template stays empty: no run, no experiment of any project
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    db.close()
