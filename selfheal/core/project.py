"""selfheal.yaml: what selfheal guards in a DVC project it did not write, validated with one-line errors.

A foreign project's params.yaml is never parsed: this file names the model artifact (GTO name, its outputs,
the stages restored together as one version), the gate (a metrics file, a dotted key, max or min, an absolute
bound, the largest relative change versus production), how a candidate is made, and where selfheal keeps its
own records (`.selfheal/` by default, never the project's folders). `selfheal init` writes it.

`kind: selfheal` marks this repository's own pipeline: the knobs its stages read stay in params.yaml (the guide's
keys); its selfheal.yaml names, for the same tools, what the built-in pipeline hard-codes (a test keeps them in
step) and holds the groups only selfheal reads: `service_recovery` (the guide's keys for our built-in service)
and `escalation` (any kind).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from selfheal.core.config import (
    DataQualityParams,
    EscalationParams,
    Params,
    ServiceRecoveryParams,
    _explain,
    load_params,
    parse_yaml,
    read_yaml,
    without_plugins,
)
from selfheal.core.errors import ConfigError, SelfHealError
from selfheal.core.workspace import PARAMS, PROJECT_FILE, inside

RECORDS = Path(".selfheal")
# another file than selfheal.yaml: one per artifact, when one repository guards several models
PROJECT_ENV = "SELFHEAL_PROJECT"


def project_file() -> Path:
    """The configuration this process reads: $SELFHEAL_PROJECT (e.g. selfheal.nn.yaml), else selfheal.yaml."""
    return Path(os.environ.get(PROJECT_ENV) or PROJECT_FILE)


class _Section(BaseModel):
    # schemas built on first use: a command that never validates a group does not pay for building it
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class ModelSection(_Section):
    # GTO's artifact name rule; `<folder>:<name>` for a dvc.yaml in a folder of the repository (GTO's own form)
    artifact: str = Field(min_length=1, pattern=r"^([a-zA-Z0-9_./-]+:)?[a-z0-9][a-z0-9._-]*$")
    outs: list[str] = Field(min_length=1)  # files or directories, as dvc.yaml names them
    stages: list[str] = Field(min_length=1)  # restored together: the version is their dvc.lock entries


class GateSection(_Section):
    metrics: str  # a JSON (or YAML) metrics file
    key: str = Field(min_length=1)  # dotted path into it: avg_prec.test
    direction: Literal["max", "min"] = "max"
    bound: float | None = None  # max: metric >= bound; min: metric <= bound
    max_relative_change: float = Field(0.05, ge=0)  # how much worse than production, as a share of it
    stage: str = "prod"  # the GTO stage that means production


class ReproSection(_Section):
    target: str | None = None  # `dvc repro <target>` (all stages when empty)
    command: str | None = None  # or any shell command that produces a candidate
    max_failures: int = Field(3, gt=0)  # failed builds from the same inputs before an alert asks for a person

    def argv(self) -> list[str] | None:
        """The `dvc repro` arguments, or None when `command` (a shell line) is configured instead."""
        return None if self.command else ["repro", *([self.target] if self.target else [])]


# a stage's own code and settings: a change reruns the stage, but it is not data a candidate is made from
CODE_SUFFIXES = (".py", ".r", ".R", ".sh", ".ipynb", ".jl", ".scala", ".java", ".js", ".ts", ".sql", ".toml", ".cfg")
DATA_FORMATS = (".csv", ".parquet")  # what data.fix can fix in place
READABLE = (*DATA_FORMATS, ".tsv")  # what data checks and drift read
_URL = r"^https?://[^\s/]+"


class DataSection(_Section):
    deps: list[str] = Field(default_factory=list)  # data files a new candidate is made from (a change: repro)
    fix: list[str] = Field(default_factory=list)  # CSV / parquet files checked and fixed in place before a repro
    target: str | None = None  # a label column: never filled or capped; rows without it are dropped
    quality: DataQualityParams = Field(default_factory=DataQualityParams)  # params.yaml's data_quality keys

    @model_validator(mode="after")
    def _fixable(self) -> DataSection:
        odd = [f for f in self.fix if not f.endswith(DATA_FORMATS)]
        if odd:
            raise ValueError(f"data.fix: {odd[0]!r} is neither .csv nor .parquet (the formats selfheal can fix)")
        return self

    @property
    def watched(self) -> list[str]:
        """Every data file whose change makes heal reproduce a candidate: deps and fixed files."""
        return list(dict.fromkeys([*self.deps, *self.fix]))


class DriftSection(_Section):
    reference: str  # the data the production model learnt from (CSV or parquet)
    current: str  # the newest batch, compared with it
    drift_threshold: float = Field(0.5, ge=0, le=1)  # params.yaml's drift key: share of drifted columns
    columns: list[str] | None = None  # the columns compared (default: every shared column but data.target)
    auto_retrain_enabled: bool = True  # false: drift is recorded and reported, never acted on

    @model_validator(mode="after")
    def _readable(self) -> DriftSection:
        for key in ("reference", "current"):
            if not getattr(self, key).endswith(READABLE):
                raise ValueError(f"drift.{key}: {getattr(self, key)!r} is none of .csv, .tsv, .parquet")
        return self


class RetrainSection(_Section):
    command: str | None = None  # a shell command that folds new data in and retrains (default: the repro section)
    cooldown_hours: float = Field(24, ge=0)


class ServiceSection(_Section):
    reload: str | None = Field(None, pattern=_URL)  # POSTed after production changed, so the service swaps models
    health: str | None = Field(None, pattern=_URL)  # GET: 200 is healthy; refused, no answer or another code is not
    start: str | None = None  # how to (re)start it, no shell: `python serve.py --port {port}` ({host}, {port})
    health_timeout_seconds: float = Field(2.0, gt=0)
    startup_timeout_seconds: float = Field(30.0, gt=0)
    max_recovery_attempts: int = Field(3, gt=0)
    kill_grace_seconds: float = Field(3.0, ge=0)
    watch_interval_seconds: float = Field(1.0, gt=0)
    watch_window_minutes: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _something(self) -> ServiceSection:
        if self.reload is None and self.health is None:
            raise ValueError("service: set health (a URL answering 200 when healthy) and/or reload")
        if self.start and self.health is None:
            raise ValueError("service.start needs service.health, to know when the started service is up")
        return self


class RegistrySection(_Section):
    # a git remote shared by every clone that promotes (`origin`): versions and production assignments are
    # fetched from it and claimed on it; unset, the registry is this clone's tags and nothing is pushed
    remote: str | None = Field(None, min_length=1)


class DrillSection(_Section):
    # params that make a candidate the gate must refuse, for the drill's bad-candidate trial on any project:
    # {"train.n_est": 1} (params.yaml) or {"conf/train.yaml:epochs": 1}; `selfheal init` proposes one
    degrade: dict[str, int | float | str | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _yaml_keys(self) -> DrillSection:
        for name in self.degrade:
            file, _, key = name.rpartition(":")
            if not key or (file and not file.endswith((".yaml", ".yml"))):
                raise ValueError(f"drill.degrade: {name!r} is not `key.path` or `params.yaml:key.path`")
        return self

    def changes(self) -> list[tuple[str, str, int | float | str | bool]]:
        """(params file, dotted key, value) of each degrading change."""
        return [(name.rpartition(":")[0] or "params.yaml", name.rpartition(":")[2], value)
                for name, value in self.degrade.items()]


class Project(_Section):
    kind: Literal["dvc", "selfheal"] = "dvc"
    model: ModelSection
    gate: GateSection
    repro: ReproSection = Field(default_factory=ReproSection)
    data: DataSection | None = None
    drift: DriftSection | None = None
    retrain: RetrainSection = Field(default_factory=RetrainSection)
    service: ServiceSection | None = None
    registry: RegistrySection = Field(default_factory=RegistrySection)
    drill: DrillSection | None = None
    escalation: EscalationParams = Field(default_factory=EscalationParams)
    # the guide's keys for selfheal's built-in service; a project serving its own model says `service:`
    service_recovery: ServiceRecoveryParams = Field(default_factory=ServiceRecoveryParams)
    records: str = str(RECORDS)
    _params: Params | None = PrivateAttr(default=None)  # set by open_project for our pipeline

    @property
    def params(self) -> Params | None:
        """Our pipeline's params.yaml with this file's own groups (kind selfheal, opened by open_project); None
        for any other project, whose params.yaml selfheal never parses."""
        return self._params

    def with_params(self, params: Params) -> Project:
        """This project of our pipeline's kind, with its params (tests and benchmarks build them in memory)."""
        if self.kind != "selfheal":
            raise ValueError("only our own pipeline (kind selfheal) has params selfheal reads")
        project = self.model_copy()
        project._params = params
        return project

    @model_validator(mode="after")
    def _records_are_selfheal_own(self) -> Project:
        if self.kind == "dvc" and inside(self.records, self.model.outs):
            raise ValueError(f"records: {self.records!r} lies inside a model output; use .selfheal")
        if self.kind == "dvc" and "service_recovery" in self.model_fields_set:
            raise ValueError("service_recovery: configures selfheal's built-in service (kind selfheal); "
                             "a project's own service is `service:` (health, reload, start)")
        return self

    def own_groups(self) -> dict[str, Any]:
        """The params groups only selfheal reads, as config.load_params takes them."""
        return self.model_dump(include={"service_recovery", "escalation"})

    @property
    def records_dir(self) -> Path:
        return Path(self.records)

    def record(self, path: Path) -> Path:
        """A file of selfheal's own (a log, the status): for our pipeline the workspace contract's place (the
        guide's log files), for any other project inside the records directory under that name
        (`workspace.HEAL_LOG` -> `.selfheal/heal_log.json`)."""
        return path if self.kind == "selfheal" else self.records_dir / path.name


def parse(raw: Any, source: str = str(PROJECT_FILE)) -> Project:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with model:, gate: and optional repro:, data:, ... keys")
    try:
        with without_plugins():
            return Project.model_validate(raw)
    except ValidationError as exc:
        raise _explain(source, exc) from None


def load(path: str | Path | None = None) -> Project:
    path = Path(path or project_file())
    return parse(read_yaml(path, "not found; run `selfheal init` in the project root"), str(path))


# this repository's own pipeline, as its selfheal.yaml declares it (a test keeps the two equal): what a project
# with our layout but no selfheal.yaml (a copy of models/ and params.yaml, say) is taken to be
OURS = {"kind": "selfheal", "model": {"artifact": "model", "outs": ["models/model.joblib"], "stages": ["train", "validate"]},
        "gate": {"metrics": "metrics/records/validation.json", "key": "metric", "direction": "max",
                 "max_relative_change": 0.05, "stage": "prod"},
        "records": str(RECORDS)}


def current(root: str | Path = ".") -> Project:
    """The project at `root`, of either kind: its selfheal.yaml, else our own pipeline's layout (OURS)."""
    path = Path(root) / project_file()
    return load(path) if path.exists() else parse(OURS, "selfheal's own pipeline")


def service_recovery_of(path: Path) -> ServiceRecoveryParams | None:
    """The service_recovery group of the selfheal.yaml at `path` (what the built-in service reads at its start
    and on a configuration reload); None when there is no such file."""
    return load(path).service_recovery if path.exists() else None


def open_project(root: str | Path = ".", params: str | Path | None = None,
                 healing_config: str | Path | None = None) -> Project:
    """The project at `root` (either kind); for our own pipeline with its params (`params`, default the root's
    params.yaml) joined by this file's own groups, and the guide's JSON config over both (Project.params)."""
    config = current(root)
    if config.kind != "selfheal":
        return config
    return config.with_params(load_params(params or Path(root) / PARAMS, healing_config, config.own_groups()))


def at_key(doc: Any, key: str) -> Any:
    """The value at a dotted key (`train.n_est`) of a parsed YAML or JSON document; None where a part is missing."""
    for part in str(key).split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def dig(doc: Any, key: str, source: str) -> float:
    """The number at a dotted key (`avg_prec.test`) of a parsed metrics document."""
    value = doc
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise SelfHealError(f"{source}: no key {key!r} (missing {part!r})")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SelfHealError(f"{source}: {key} is {value!r}, expected a number")
    return float(value)


def parse_metrics(data: bytes, source: str) -> Any:
    """A metrics file's content (JSON, or YAML for .yaml/.yml)."""
    try:
        if source.endswith((".yaml", ".yml")):
            return parse_yaml(data)
        return json.loads(data)
    except (ValueError, yaml.YAMLError) as exc:
        raise SelfHealError(f"{source}: not valid metrics ({exc})") from None


def numeric_keys(doc: Any, prefix: str = "") -> dict[str, float]:
    """Every numeric leaf of a metrics document by dotted key: {"avg_prec.test": 0.9, ...}."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(numeric_keys(v, f"{prefix}{k}."))
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out[prefix.rstrip(".")] = float(doc)
    return out
