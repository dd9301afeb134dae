"""What the drill knows of the project it drills, for either kind: what it offers the fault catalogue, where a
fault goes, where its service answers, and what the judge needs (judge.Spec).

Our pipeline offers its own fault kinds (raw data, params, its service's /predict); a project configured through
selfheal.yaml offers what its sections and its pipeline have (ops/faults.py lists the needs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, current, project_file
from selfheal.ops import faults as catalogue
from selfheal.ops import judge, sandbox
from selfheal.ops.trials import free_port
from selfheal.versions import vcs

TABULAR = {".csv": ",", ".tsv": "\t"}
LOGS = (workspace.DATA_FIX_LOG, workspace.ROLLBACK_LOG, workspace.RETRAINING_LOG, workspace.RECOVERY_LOG,
        workspace.ALERTS_LOG, workspace.HEAL_LOG, workspace.SELF_HEALING)


@dataclass(frozen=True)
class Target:
    """The project a drill runs on: its configuration (our pipeline's is `kind: selfheal`) and its offers."""

    config: Project
    capabilities: frozenset[str]

    @property
    def ours(self) -> bool:
        return self.config.kind == "selfheal"


def target(source: Path) -> Target:
    from selfheal.core import project
    from selfheal.versions import vcs

    config = project.current(source)
    if config.kind == "selfheal":
        return Target(config, catalogue.OURS)
    folder = vcs.folder(source)
    if folder:
        raise SelfHealError(f"selfheal drill: this pipeline sits in {folder}/ of its repository; the "
                            "drill copies and drills a pipeline at the top of its repository only (heal, promote, "
                            "rollback and versions work here)")
    return Target(config, capabilities(config, source))


def params(root: Path) -> dict[str, Any]:
    """Our pipeline's params.yaml ({} for a configured project, whose params selfheal never parses)."""
    path = root / workspace.PARAMS
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}


def spec_of(root: Path, config: Project) -> judge.Spec:
    from selfheal.pipeline import tracking

    ours = config.kind == "selfheal"
    return judge.Spec(config.model.artifact, config.gate.stage, tuple(config.model.stages), config.records_dir,
                      tuple(config.record(log) for log in LOGS), judge.outputs(root),
                      (tracking.DEFAULT_DB, "mlartifacts") if ours else ())


# -- the service ------------------------------------------------------------------------------------------------

def own_port(root: Path, on: Target) -> None:
    """Give the copy's service a free port of its own (never the one the user's service may be using): our
    service_recovery.service_url; a configured project's service.health (and service.reload on the same
    address) when service.start takes `{port}`."""
    if on.ours:
        sandbox.set_params(root, service_recovery={"service_url": f"http://127.0.0.1:{free_port()}"})
        return
    path = root / project_file()
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    service = doc.get("service") or {}
    if not service.get("health") or "{port}" not in str(service.get("start") or ""):
        return
    old = urlsplit(service["health"])
    new = f"{old.hostname}:{free_port()}"
    for key in ("health", "reload"):
        url = urlsplit(service.get(key) or "")
        if url.netloc == old.netloc:
            service[key] = url._replace(netloc=new).geturl()
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def health_url(root: Path, on: Target) -> str | None:
    """Where the copy's service answers 200 when healthy; None when the drill cannot start one."""
    if on.ours:
        return current(root).service_recovery.service_url.rstrip("/") + "/health"
    service = (yaml.safe_load((root / project_file()).read_text(encoding="utf-8")) or {}).get("service") or {}
    return service.get("health") if service.get("start") else None


# -- where faults go --------------------------------------------------------------------------------------------

def inputs(root: Path) -> set[str]:
    """The files the pipeline reads and no stage writes (its data), as dvc.lock records them."""
    stages = judge.lock(root)
    produced = {p for entry in stages.values() for p in vcs.hashes(entry, "outs")}
    return {p for entry in stages.values() for p in vcs.hashes(entry, "deps")} - produced


def _data_file(root: Path) -> Path | None:
    """A CSV/TSV the pipeline reads and no stage writes: where new training data arrives."""
    return next((root / d for d in sorted(inputs(root)) if Path(d).suffix in TABULAR and (root / d).is_file()), None)


def _dir_outs(root: Path, config: Project) -> tuple[Path, ...]:
    stages = judge.lock(root)
    return tuple(Path(p) for s in config.model.stages for p, md5 in vcs.hashes(stages.get(s) or {}, "outs").items()
                 if md5.endswith(".dir"))


def _fix_csv(root: Path, config: Project) -> Path | None:
    """The first CSV under data.fix that exists: where a configured project's data faults go."""
    names = config.data.fix if config.data is not None else []
    return next((root / n for n in names if n.endswith(".csv") and (root / n).is_file()), None)


def label(config: Project) -> str:
    return (config.data.target if config.data is not None else None) or ""


def capabilities(config: Project, root: Path) -> frozenset[str]:
    """What a configured project offers the fault catalogue: `dvc`, `model`, the optional sections its
    selfheal.yaml sets, `output_dir` and `tabular_data` when its pipeline has them, and what the sections' kinds
    need to be injected and judged: `data_fix_csv` (a CSV under data.fix), `drift_columns` (see _shiftable),
    `service_start` (a health URL and a start command), `drill_degrade`."""
    caps = {"dvc", "model"} | {name for name in config.model_fields_set
                               if name not in ("kind", "model", "gate", "records")}
    if _dir_outs(root, config):
        caps.add("output_dir")
    if _data_file(root) is not None:
        caps.add("tabular_data")
    if _fix_csv(root, config) is not None:
        caps.add("data_fix_csv")
    if _shiftable(root, config):
        caps.add("drift_columns")
    if config.service is not None and config.service.health and config.service.start:
        caps.add("service_start")
    if config.drill is not None and config.drill.degrade:
        caps.add("drill_degrade")
    return frozenset(caps)


def _compared(root: Path, config: Project) -> tuple[str, ...]:
    """The columns drift is measured on, as heal measures it: drift.columns, else every column the reference
    and the current batch share but the target."""
    import pandas as pd

    d = config.drift
    if d is None or d.columns:
        return tuple(d.columns or []) if d is not None else ()
    ref = root / d.reference
    header = list(pd.read_parquet(ref).columns if ref.suffix == ".parquet" else pd.read_csv(ref, nrows=0).columns)
    current = pd.read_csv(root / d.current, nrows=0).columns
    return tuple(c for c in header if c in current and c != label(config))


def _shiftable(root: Path, config: Project) -> tuple[str, ...]:
    """The compared numeric columns of drift.current a drift fault may shift, judged against the baseline batch's
    own drift: none already drifted, and shifting one of them keeps the share of drifted columns below
    drift_threshold while shifting 3/4 of them reaches it. (): the drift kinds cannot be judged on this project."""
    import pandas as pd

    from selfheal.healing.measure import measure_drift

    d = config.drift
    if d is None or not d.current.endswith(".csv") or not (root / d.current).is_file() \
            or not (root / d.reference).is_file():
        return ()
    compared = _compared(root, config)
    try:
        baseline = measure_drift(config, root, remember=False)
    except SelfHealError:
        return ()
    drifted = {c for c, col in baseline["columns"].items() if col["drifted"]}
    numeric = [c for c in catalogue.numeric_columns(pd.read_csv(root / d.current, dtype=str, keep_default_na=False,
                                                                nrows=2000), label(config), compared)
               if c not in drifted]
    most = max(1, len(numeric) * 3 // 4)
    fits = len(numeric) >= 2 and (len(drifted) + 1) / len(compared) < d.drift_threshold \
        <= (len(drifted) + most) / len(compared)
    return tuple(numeric) if fits else ()


def faulted(root: Path, on: Target, service_pid: int | None) -> catalogue.Project:
    """The copy as the fault catalogue sees it."""
    config = on.config
    url = health_url(root, on)
    port = urlsplit(url).port if url else None
    if on.ours:
        data = params(root)["data"]
        raw = root / data["raw"]
        return catalogue.Project(root, raw, root / data["current"], data["target"], service_pid, port, fix_file=raw)
    data = _data_file(root)
    drift = config.drift
    return catalogue.Project(root, data or root, root / drift.current if drift else data or root, label(config),
                             service_pid=service_pid, port=port, model_outs=tuple(Path(o) for o in config.model.outs),
                             dir_outs=_dir_outs(root, config), label_sep=TABULAR.get(data.suffix, ",") if data else ",",
                             fix_file=_fix_csv(root, config), compared=_shiftable(root, config),
                             degrade=tuple(config.drill.changes()) if config.drill is not None else ())


def data_checked(root: Path, on: Target, project: catalogue.Project) -> tuple[Path, Path] | None:
    """(the data heal makes clean, the file dvc.lock's candidate must have read) after a data fault: our
    pipeline's clean data made from the raw file; a configured project's data.fix file, fixed in place."""
    if on.ours:
        return root / params(root)["data"]["clean"], project.raw
    return (project.fix_file, project.fix_file) if project.fix_file is not None else None


def retrain_writes(root: Path, on: Target) -> set[str]:
    """What a retrain after drift may write besides the records: the pipeline's input data (a batch folded in)
    and the drift files (the reference moved on)."""
    drift = on.config.drift
    return inputs(root) | ({drift.reference, drift.current} if drift is not None else set())
