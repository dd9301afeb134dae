"""Our pipeline's knobs, validated: unknown keys and wrong types are clear errors.

params.yaml holds what the stages read (so `dvc exp show` compares only what can change a result); the groups
only selfheal reads (service_recovery, escalation) live in selfheal.yaml (core/project.py) and join them here.
The self-healing groups keep the key names of the guide's `config/self_healing_config.json`, which is also
accepted (`--config`) and overrides those groups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfheal.core import workspace
from selfheal.core.errors import ConfigError

PLUGINS_OFF = "PYDANTIC_DISABLE_PLUGINS"


@contextmanager
def without_plugins() -> Iterator[None]:
    """Build and run our schemas without looking for pydantic plugins: selfheal uses none, and looking is a scan
    of every installed package's entry points, a large part of a quick command's time. Only while validating, so
    the processes selfheal starts (stages, services) see the environment as it was."""
    before = os.environ.get(PLUGINS_OFF)
    os.environ[PLUGINS_OFF] = "__all__"
    try:
        yield
    finally:
        if before is None:
            del os.environ[PLUGINS_OFF]
        else:
            os.environ[PLUGINS_OFF] = before


class _Group(BaseModel):
    # schemas built on first use: a command that never validates a group does not pay for building it
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class DataParams(_Group):
    raw: str = "data/raw/housing.csv"
    clean: str = "data/clean/housing.parquet"
    current: str = "data/current/housing.csv"
    target: str = "MedHouseVal"
    task: Literal["regression", "classification"] = "regression"
    columns: dict[str, Literal["numeric", "categorical"]] = Field(default_factory=dict)
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = Field(default_factory=dict)


class SynthParams(_Group):
    rows: int = Field(20640, gt=0)
    current_rows: int = Field(5000, gt=0)
    seed: int = 42
    missing: float = Field(0.01, ge=0, le=0.5)
    outliers: float = Field(0.002, ge=0, le=0.5)
    duplicates: float = Field(0.005, ge=0, le=0.5)
    dtype_errors: float = Field(0.001, ge=0, le=0.5)
    drift: float = 0.0


class DataQualityParams(_Group):
    auto_fix_enabled: bool = True
    fix_dtypes: bool = True
    fix_missing_values: bool = True
    cap_outliers: bool = True
    outlier_threshold_iqr: float = Field(3.0, gt=0)
    drop_duplicates: bool = True


class HGBParams(_Group):
    """HistGradientBoosting's knobs. With early_stopping, max_iter is an upper bound: boosting stops once the
    loss on a held-out validation_fraction of the training rows has not improved for n_iter_no_change rounds."""

    max_iter: int = Field(200, gt=0)
    learning_rate: float = Field(0.1, gt=0)
    max_leaf_nodes: int = Field(31, gt=1)
    # 1.0, not sklearn's 0: unregularised boosting overfits rare classes (ocean_proximity: accuracy 0.47-0.83
    # by seed at 200 rounds; 0.98 with L2 1.0), and costs nothing on regression
    l2_regularization: float = Field(1.0, ge=0)
    early_stopping: bool = False
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    n_iter_no_change: int = Field(10, gt=0)


class RFParams(_Group):
    n_estimators: int = Field(100, gt=0)
    max_depth: int | None = 20
    min_samples_leaf: int = Field(2, gt=0)


class LinearParams(_Group):
    alpha: float = Field(1.0, ge=0)


class TrainParams(_Group):
    model: Literal["hist_gradient_boosting", "random_forest", "linear"] = "hist_gradient_boosting"
    test_size: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    reference_rows: int = Field(5000, gt=0)
    hist_gradient_boosting: HGBParams = Field(default_factory=HGBParams)
    random_forest: RFParams = Field(default_factory=RFParams)
    linear: LinearParams = Field(default_factory=LinearParams)


class ModelValidationParams(_Group):
    auto_rollback_enabled: bool = True
    # R2 (regression) or accuracy (classification): a threshold outside [0, 1] would pass or refuse everything
    min_accuracy_threshold: float = Field(0.70, ge=0, le=1)
    max_relative_drop: float = Field(0.05, ge=0)
    min_baseline_gain: float = Field(0.1, ge=0, le=1)  # share of a trivial baseline's error the model must remove


class DriftParams(_Group):
    auto_retrain_enabled: bool = True
    drift_threshold: float = Field(0.5, ge=0, le=1)
    retraining_cooldown_hours: float = Field(24, ge=0)


class ScaleParams(_Group):
    """How fix_data and monitor handle data larger than memory: partition by partition, locally or on Dask."""

    engine: Literal["local", "dask"] = "local"  # dask: a LocalCluster, or $SELFHEAL_DASK_SCHEDULER
    workers: int = Field(2, gt=0)  # LocalCluster workers (one thread each) for engine: dask
    partition_mb: float = Field(64, gt=0)  # a CSV above this (or a directory/glob) is fixed in partitions


class ServiceRecoveryParams(_Group):
    auto_recovery_enabled: bool = True
    max_recovery_attempts: int = Field(3, gt=0)
    service_url: str = "http://127.0.0.1:8000"
    health_timeout_seconds: float = Field(2.0, gt=0)
    startup_timeout_seconds: float = Field(60.0, gt=0)
    kill_grace_seconds: float = Field(3.0, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)
    docker_container: str = "selfheal-service"
    start_command: str = ""
    warm_standby: bool = True
    watch_interval_seconds: float = Field(1.0, gt=0)
    watch_window_minutes: float = Field(10.0, gt=0)
    max_batch_size: int = Field(1000, gt=0)
    workers: int = Field(2, gt=0)  # the service's worker processes (a crashed or hung one is replaced)


class EscalationParams(_Group):
    """When `selfheal heal` stops acting on a recurring issue and asks for a person (the guide's "when to
    intervene manually"); the defaults are the guide's numbers."""

    window_hours: float = Field(24, gt=0)  # the window for repeated issues and repeated rollbacks
    max_same_issue: int = Field(3, ge=0)  # escalate when one issue occurs more often than this in the window
    max_auto_rollbacks: int = Field(2, gt=0)  # escalate at this many automatic rollbacks in the window
    drift_retrains: int = Field(3, gt=0)  # escalate when drift persists after this many retrains ...
    drift_window_days: float = Field(7, gt=0)  # ... within this many days


class Params(_Group):
    data: DataParams = Field(default_factory=DataParams)
    synth: SynthParams = Field(default_factory=SynthParams)
    data_quality: DataQualityParams = Field(default_factory=DataQualityParams)
    train: TrainParams = Field(default_factory=TrainParams)
    model_validation: ModelValidationParams = Field(default_factory=ModelValidationParams)
    drift_detection: DriftParams = Field(default_factory=DriftParams)
    scale: ScaleParams = Field(default_factory=ScaleParams)
    service_recovery: ServiceRecoveryParams = Field(default_factory=ServiceRecoveryParams)
    escalation: EscalationParams = Field(default_factory=EscalationParams)


HEALING_GROUPS = ("data_quality", "model_validation", "drift_detection", "service_recovery")
# read by selfheal only, never by a stage: selfheal.yaml's groups, not params.yaml's
OWN_GROUPS = ("service_recovery", "escalation")
STAGE_GROUPS = tuple(group for group in Params.model_fields if group not in OWN_GROUPS)


def _explain(source: str, exc: ValidationError) -> ConfigError:
    """One line per problem: `params.yaml: train.test_size: Input should be less than 1 (got 2)`."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{source}: {where}: {msg} (got {err.get('input')!r})")
    return ConfigError("; ".join(lines))


def parse_params(raw: dict[str, Any], source: str = str(workspace.PARAMS)) -> Params:
    """Validate a params mapping; groups (and keys) it leaves out take their defaults.

    Lenient on purpose, for programmatic use (tests, benchmarks, a JSON overlay checked on its own). A params
    *file* goes through load_params, which first insists that every group is there.
    """
    try:
        with without_plugins():
            return Params.model_validate(raw)
    except ValidationError as exc:
        raise _explain(source, exc) from None


def parse_yaml(text: str | bytes) -> Any:
    """YAML as safe_load reads it, by libyaml's parser when PyYAML has it (several times faster: heal reads
    params and selfheal.yaml on every run)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_yaml(path: Path, missing: str = "not found") -> Any:
    """Parse a YAML file; a missing or malformed file is one ConfigError line naming it."""
    if not path.exists():
        raise ConfigError(f"{path}: {missing}")
    try:
        return parse_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    """params.yaml's groups: every stage group must be there (an empty or truncated file is an error), and
    none of selfheal's own (one place for each knob)."""
    raw = read_yaml(path, "not found (run from the project root, or pass --params)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of groups at the top level")
    moved = [group for group in OWN_GROUPS if group in raw]
    if moved:
        raise ConfigError(f"{path}: {', '.join(moved)}: only selfheal reads this, so it lives in selfheal.yaml "
                          f"(params.yaml holds what the stages read); move the group there, keys unchanged")
    missing = [group for group in STAGE_GROUPS if group not in raw]
    if missing:
        what = "is empty" if not raw else f"has no group(s) {', '.join(missing)}"
        raise ConfigError(f"{path} {what}; expected the groups {', '.join(STAGE_GROUPS)} "
                          f"(restore them with `git checkout -- {path}` or copy them from the project's params.yaml)")
    return raw


def load_params(path: str | Path = workspace.PARAMS, healing_config: str | Path | None = None,
                own: dict[str, Any] | None = None) -> Params:
    """Load params.yaml with selfheal.yaml's own groups (`own`, validated there; defaults when not given, as
    in a stage); a seed-format JSON config, if given, overrides the self-healing groups.

    Strict like DVC, which refuses to run a stage whose params are missing from the file: a group left out is
    an error, never silently filled with defaults (a defaulted cooldown or threshold would act on values nobody
    chose). Keys left out inside a present group keep their defaults, as params.yaml's comments describe.
    """
    raw = {**_read_yaml(Path(path)), **(own or {})}
    if healing_config is not None:
        overlay = load_healing_config(healing_config)
        for group, values in overlay.items():
            raw[group] = {**(raw.get(group) or {}), **values}
    return parse_params(raw, str(path) if healing_config is None else f"{path} + {healing_config}")


def load_healing_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read `config/self_healing_config.json` (the guide's format): only the four self-healing groups."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    unknown = sorted(set(raw) - set(HEALING_GROUPS))
    if unknown:
        raise ConfigError(f"{path}: unknown group(s) {unknown}; expected some of {list(HEALING_GROUPS)}")
    # validate the overlay on its own so errors name the JSON file
    parse_params(raw, str(path))
    return raw
