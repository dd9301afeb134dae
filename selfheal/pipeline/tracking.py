"""Log each training run (params, train metrics, the model) to MLflow.

The default store is embedded and offline: `sqlite:///mlflow.db` in the working directory (the repo root when a
stage runs) with artifacts under `mlartifacts/`; browse it with `mlflow ui --backend-store-uri sqlite:///mlflow.db`.
`MLFLOW_TRACKING_URI` points it at a server instead. `SELFHEAL_MLFLOW=0` skips tracking entirely, for machines
without a writable store. mlflow is imported only inside these functions: it costs seconds to import.

The first run on a new store pays for MLflow's schema migrations (about 10 s on a slow machine); later runs do not.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from selfheal.core.errors import SelfHealError
from selfheal.pipeline.training import predict

EXPERIMENT = "selfheal"
DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
SWITCH = "SELFHEAL_MLFLOW"
# No network (telemetry) and no slow or noisy paths; setdefault so a user's own setting wins.
_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_RECORD_ENV_VARS_IN_MODEL_LOGGING": "false",
}


def enabled() -> bool:
    return os.environ.get(SWITCH, "1").strip().lower() not in {"0", "false", "no", "off"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


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
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    try:
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(uri)
        experiment_id = _experiment_id(mlflow, uri)
        tags = {"selfheal.data_md5": str(meta.get("data_md5")), "selfheal.model": meta["model"]}
        with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
            mlflow.log_params(_flat_params(meta))
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
            signature = infer_signature(sample, predict(pipeline, sample))
            sk_logger = logging.getLogger("mlflow.sklearn")
            previous = sk_logger.level
            sk_logger.setLevel(logging.ERROR)  # the pickle caution is about the choice documented above
            try:
                mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    serialization_format="cloudpickle",
                    signature=signature,
                    pip_requirements=_pip_requirements(),
                )
            finally:
                sk_logger.setLevel(previous)
            return run.info.run_id
    except Exception as exc:  # an unwritable, locked or unreachable store: say where and how to skip it
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise SelfHealError(
            f"MLflow logging to {uri} failed ({type(exc).__name__}: {first_line}); "
            f"set {SWITCH}=0 to train without tracking"
        ) from None
