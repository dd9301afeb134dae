"""Log each training run to MLflow (params, train and holdout metrics, the model with an input example, tags
naming the DVC experiment and git commit), and keep MLflow's model registry on what GTO calls production.

The default store is embedded and offline: `sqlite:///mlflow.db` in the working directory (the repo root when a
stage runs) with artifacts under `mlartifacts/`; browse it with `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
`MLFLOW_TRACKING_URI` points it at a server instead. `SELFHEAL_MLFLOW=0` skips tracking entirely, for machines
without a writable store. mlflow is imported only inside these functions: it costs seconds to import.

A run's model becomes a version of the registered model `selfheal` when it first reaches production: promote
and rollback register it if needed and move the alias `prod` (`models:/selfheal@prod`), so the MLflow UI shows
the same production as `selfheal versions`. Candidates stay runs, tagged `selfheal.verdict` once judged
("production v0.0.3", or "refused: " and the gate's reason).

A new embedded store pays for MLflow's schema migrations (a large share of train) only once per environment: the
first one migrates an empty store under workspace.MLFLOW_TEMPLATES and every new embedded store (a fresh clone, a
sandbox) starts as a copy of it. MLflow then opens it as usual, checks its schema
is at MLflow's head revision and creates its default experiment in it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.pipeline.training import predict, single_threaded

EXPERIMENT = "selfheal"
REGISTERED_MODEL = "selfheal"
PROD_ALIAS = "prod"
EXP_NAME_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for the stages it runs
DEFAULT_DB = "mlflow.db"
DEFAULT_URI = f"sqlite:///{DEFAULT_DB}"
ARTIFACTS_DIR = "mlartifacts"
SWITCH = "SELFHEAL_MLFLOW"
# No network (telemetry) and no slow or noisy paths; setdefault so a user's own setting wins.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
}


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def tracking_uri(root: Path | None = None) -> str:
    """The store: MLFLOW_TRACKING_URI, else the embedded one in `root` (default: the working directory)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return DEFAULT_URI if root is None else f"sqlite:///{(root / DEFAULT_DB).resolve()}"


def quiet() -> None:
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def _git_commit() -> str | None:
    """The commit the run's code and params come from (None outside a git repository)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(meta: dict[str, Any]) -> dict[str, str]:
    """What links a run to the rest of the project: the data, the model kind, the DVC experiment, the commit."""
    tags = {"selfheal.data_md5": str(meta.get("data_md5")), "selfheal.model": meta["model"]}
    exp_name = os.environ.get(EXP_NAME_ENV)
    if exp_name:
        tags["selfheal.dvc_exp"] = exp_name
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _pip_requirements() -> list[str]:
    """Pinned from the running environment: giving them skips MLflow's slow requirement inference."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "cloudpickle", "pandas", "numpy")]


def _experiment_id(mlflow: Any, uri: str) -> str:
    """Get or create the experiment; on the embedded store its artifacts go to ./mlartifacts (not ./mlruns)."""
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    location = Path(ARTIFACTS_DIR).resolve().as_uri() if uri == DEFAULT_URI else None
    try:
        return mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent run
        return mlflow.get_experiment_by_name(EXPERIMENT).experiment_id


def _template() -> Path:
    """The empty store this environment's MLflow migrated (made the first time: MLflow's own migrations)."""
    from importlib.metadata import version

    from mlflow.tracking import MlflowClient

    template = workspace.MLFLOW_TEMPLATES / f"mlflow-{version('mlflow')}.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        try:
            MlflowClient(f"sqlite:///{tmp}").search_experiments()  # migrates the empty store to MLflow's head
            with sqlite3.connect(tmp) as db:  # each project's store makes its own, with its artifact location
                db.execute("DELETE FROM experiments WHERE experiment_id = 0")
            db.close()
            os.replace(tmp, template)
        finally:
            tmp.unlink(missing_ok=True)
    return template


def _new_store(uri: str) -> None:
    """A new SQLite store (the embedded default, or a file MLFLOW_TRACKING_URI names) starts as a copy of the
    migrated empty one; elsewhere (a server, an existing store, a read-only environment) MLflow opens or migrates
    the store itself, as before."""
    path = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or path.exists():
        return
    try:
        template = _template()
        atomic.atomic_write(path, lambda tmp: shutil.copyfile(template, tmp))
    except OSError:
        return


def _flat_params(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": meta["model"],
        "task": meta["task"],
        "target": meta["target"],
        **meta["params"],
        "n_features": len(meta["features"]),
    }


def log_training(pipeline: Any, meta: dict[str, Any], metrics: dict[str, float], sample: Any) -> str | None:
    """Log one training run; returns its run id (None when SELFHEAL_MLFLOW=0).

    `sample` (a few feature rows) gives the model a signature, so `mlflow models serve` accepts named columns.
    The model is stored with cloudpickle: the same trust model as models/model.joblib, loadable without
    skops' trusted-type lists.
    """
    if not enabled():
        return None
    quiet()
    uri = tracking_uri()
    try:
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        _new_store(uri)
        mlflow.set_tracking_uri(uri)
        experiment_id = _experiment_id(mlflow, uri)
        with mlflow.start_run(experiment_id=experiment_id, tags=run_tags(meta)) as run:
            mlflow.log_params(_flat_params(meta))
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            signature = infer_signature(sample, predict(pipeline, sample))
            sk_logger = logging.getLogger("mlflow.sklearn")
            previous = sk_logger.level
            sk_logger.setLevel(logging.ERROR)  # the pickle caution is about the choice documented above
            # single-threaded: MLflow checks the input example by predicting it, which with OpenMP's default
            # threads on a busy machine takes most of a second for three rows (see training.single_threaded)
            try:
                with single_threaded():
                    mlflow.sklearn.log_model(
                        pipeline,
                        name="model",
                        serialization_format="cloudpickle",
                        signature=signature,
                        input_example=sample.head(3),
                        pip_requirements=_pip_requirements(),
                    )
            finally:
                sk_logger.setLevel(previous)
            return run.info.run_id
    except Exception as exc:  # an unwritable, locked or unreachable store: say where and how to skip it
        raise _store_error(uri, exc) from None


def _store_error(uri: str, exc: Exception) -> SelfHealError:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return SelfHealError(
        f"MLflow logging to {uri} failed ({type(exc).__name__}: {first_line}); set {SWITCH}=0 to run without tracking"
    )


def _no_store(root: Path) -> bool:
    """No server named and no embedded store in `root`: nothing to update, and no empty store to create."""
    return not os.environ.get("MLFLOW_TRACKING_URI") and not (root / DEFAULT_DB).exists()


def _client(uri: str) -> Any:
    quiet()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


MODEL_TAG = "selfheal.model_md5"  # links a run to the model bytes it made (tracked files hold no run id)
VERDICT_TAG = "selfheal.verdict"  # "production vX" once promoted or restored, "refused: why" when the gate said no


def tag_model(run_id: str | None, md5: str) -> None:
    """Record on the run which model bytes it made: how validate, promote and rollback find it again."""
    if not enabled() or not run_id:
        return
    uri = tracking_uri()
    try:
        _client(uri).set_tag(run_id, MODEL_TAG, md5)
    except Exception as exc:
        raise _store_error(uri, exc) from None


def run_for_model(md5: str | None, root: Path = Path(".")) -> str | None:
    """The latest run that made these model bytes, or None (tracking off, no store, or trained without it)."""
    if not enabled() or not md5 or _no_store(root):
        return None
    uri = tracking_uri(root)
    try:
        import mlflow

        client = _client(uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{MODEL_TAG}` = '{md5}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
    except Exception as exc:
        raise _store_error(uri, exc) from None
    return runs[0].info.run_id if runs else None


def set_production_alias(run_id: str | None, version: str, root: Path) -> str | None:
    """Point the registry alias `prod` at the registered model version of `run_id` (registering the run's model
    the first time it reaches production: candidates stay runs) and tag it with the GTO version name; returns the
    MLflow version number, or None when there is nothing to move (tracking off, no linked run, no store). Store
    failures raise SelfHealError."""
    if not enabled() or not run_id:
        return None
    if _no_store(root):
        return None
    uri = tracking_uri(root)
    try:
        client = _client(uri)
        found = client.search_model_versions(f"name='{REGISTERED_MODEL}' and run_id='{run_id}'")
        if found:
            number = str(found[0].version)
        else:
            import mlflow

            mlflow.set_tracking_uri(uri)
            with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Created version" lines: ours say it
                number = str(mlflow.register_model(f"runs:/{run_id}/model", REGISTERED_MODEL).version)
        client.set_registered_model_alias(REGISTERED_MODEL, PROD_ALIAS, number)
        client.set_model_version_tag(REGISTERED_MODEL, number, "selfheal.version", version)
        client.set_tag(run_id, VERDICT_TAG, f"production {version}")
    except Exception as exc:
        raise _store_error(uri, exc) from None
    return number


def tag_refused(run_id: str | None, reason: str, root: Path) -> None:
    """Record on a refused candidate's run why the gate refused it; the run stays unregistered."""
    if not enabled() or not run_id or _no_store(root):
        return
    uri = tracking_uri(root)
    try:
        _client(uri).set_tag(run_id, VERDICT_TAG, f"refused: {reason}"[:5000])
    except Exception as exc:
        raise _store_error(uri, exc) from None
