"""What heal looks at, for any project kind, gathered into the policy's Observations.

Cheap on a healthy project: dvc.lock, the GTO tags, a few JSON records, one md5 per watched data file and per
version output (a directory through its manifest in the DVC cache), one health check. A data file is read
(pandas) only when its bytes differ from the last ones checked clean, drift is measured only when its inputs
differ from the last measurement, and the registered versions' identities are read only when the workspace
holds a candidate that is not production.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfheal.core import atomic, audit, escalation, workspace
from selfheal.core.clock import parse_time
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project
from selfheal.healing.policy import Observations, Settings
from selfheal.versions import catalog, checkout, gate, vcs
from selfheal.versions.params_edits import files_of, params_changed, upstream

if TYPE_CHECKING:
    from selfheal.service.client import Health

# the audit log of each issue, whose recurrences escalate it
LOGS = {"data_quality": workspace.DATA_FIX_LOG, "model": workspace.ROLLBACK_LOG, "drift": workspace.RETRAINING_LOG,
        "service": workspace.RECOVERY_LOG}


def settings(project: Project) -> Settings:
    """The policy's settings: our pipeline's params (Project.params), selfheal.yaml's sections for any other."""
    if (params := project.params) is not None:
        dd, sr = params.drift_detection, params.service_recovery
        return Settings(
            escalation=params.escalation, auto_fix=params.data_quality.auto_fix_enabled, repro_fixes=True,
            auto_rollback=params.model_validation.auto_rollback_enabled, auto_retrain=dd.auto_retrain_enabled,
            cooldown_hours=dd.retraining_cooldown_hours, drift_threshold=dd.drift_threshold,
            auto_recovery=sr.auto_recovery_enabled, max_recovery_attempts=sr.max_recovery_attempts,
            current=params.data.current, fix_switch="data_quality.auto_fix_enabled",
            retrain_switch="drift_detection.auto_retrain_enabled", stage=project.gate.stage)
    data, drift, service = project.data, project.drift, project.service
    return Settings(
        escalation=project.escalation, auto_fix=data.quality.auto_fix_enabled if data else True, auto_rollback=True,
        auto_retrain=drift.auto_retrain_enabled if drift else True, cooldown_hours=project.retrain.cooldown_hours,
        drift_threshold=drift.drift_threshold if drift else 0.5,
        max_recovery_attempts=service.max_recovery_attempts if service else 3,
        current=drift.current if drift else "the current batch", stage=project.gate.stage)


def watched(project: Project) -> list[str]:
    """The data files whose change makes a new candidate: data.raw of our pipeline, data.deps and data.fix else."""
    if (params := project.params) is not None:
        return [params.data.raw]
    return project.data.watched if project.data else []


def inputs(project: Project, cwd: Path) -> dict[str, str]:
    """{path: md5} of what a candidate is made from: the watched data and every file a stage of dvc.lock reads
    (its code and params files included), so a failed build is tried again only once one of them changes."""
    paths = set(watched(project))
    for entry in upstream(vcs.read_lock(cwd / workspace.DVC_LOCK), project.model.stages).values():
        paths |= set(vcs.hashes(entry, "deps")) | set(entry.get("params") or {})
    return {p: atomic.md5_file(cwd / p) for p in sorted(paths) if (cwd / p).is_file()}


def data_faults(project: Project, cwd: Path, remember: bool) -> tuple[dict[str, str], list[str]]:
    """({file with something to fix: what}, files with faults left unfixed because auto-fix is off). A file
    whose bytes were checked clean before is not read again; `remember` records the clean ones."""
    if project.data is None or not project.data.fix:
        return {}, []
    from selfheal.healing.filefix import planned

    record = cwd / project.record(workspace.DATA_CHECKED)
    checked = audit.read(record, {})
    faulty: dict[str, str] = {}
    left: list[str] = []
    for name in project.data.fix:
        path = cwd / name
        if not path.is_file():
            raise SelfHealError(f"selfheal.yaml: data.fix: {name}: file not found")
        md5 = atomic.md5_file(path)
        if checked.get(name) == md5:
            continue
        report = planned(path, project.data.target, project.data.quality)
        if report["changes"]:
            faulty[name] = f"{name} ({report['changes']} change(s) to make)"
        elif report["problems_before"]:
            left.append(f"{name}: {'; '.join(report['open_problems'])[:200]}")
        else:
            checked[name] = md5
    if remember:
        atomic.write_json(record, checked)
    return faulty, left


def shaped(data: Any) -> dict[str, Any]:
    """The guide's shape {"last_retrain_time": ..., "history": [...]}; a plain list of entries (written before
    that shape, or by a settled interruption) counts its last completed retrain (promoted, rolled back or
    unchanged) as the last retrain."""
    if isinstance(data, dict):
        return data
    history = list(data or [])
    done = [e for e in history if e.get("outcome") in ("promoted", "rolled_back", "unchanged")]
    return {"last_retrain_time": done[-1].get("timestamp") if done else None, "history": history}


def read_log(log: Path) -> dict[str, Any]:
    return shaped(audit.read(log, {}))


def last_retrain_time(log: Path) -> datetime | None:
    value = read_log(log).get("last_retrain_time")
    return parse_time(value) if value else None


def _promoted_on(current: Path, log: Path, versions: catalog.Versions | None) -> str | None:
    """The version a completed retrain trained on exactly this batch (same md5) and promoted, or None: from the
    retraining log, else from the registry, whose record of a retrained version names its batch (so a fresh
    clone, a CI runner without the records, knows it too)."""
    if not current.is_file():
        return None
    md5 = atomic.md5_file(current)
    for entry in reversed(read_log(log).get("history") or []):
        if entry.get("current_md5") == md5 and entry.get("outcome") == "promoted":
            return str(entry.get("version") or f"the retrain of {entry.get('timestamp')}")
    for version in reversed(versions.known if versions else []):
        if md5 in (version.meta.get("trained_on") or {}).values():
            return version.name
    return None


def _last_retrained(versions: catalog.Versions) -> datetime | None:
    """When the newest version a retrain made was promoted (the registry's record), or None."""
    times = [parse_time(v.meta["promoted_at"]) for v in versions.known
             if v.meta.get("trained_on") and v.meta.get("promoted_at")]
    return max(times, default=None)


def batch_retrained(current: Path, log: Path, versions: catalog.Versions | None = None) -> str | None:
    """Why retraining on this very batch again would fold nothing new (a version was already trained on it), or
    None. The drift then persists by construction: a person decides whether the batch is the new normal."""
    version = _promoted_on(current, log, versions)
    if version is None:
        return None
    return (f"{version} was already trained on this batch ({current.name}): retraining would fold nothing new. The "
            "drift reference now mixes the old training data with this batch, so the batch still differs from most "
            "of it; a new batch is measured afresh, and a person decides whether this one is the new normal")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = atomic.read_json(path)
    except ValueError:
        return None  # a damaged report is as good as none: the pipeline rewrites it
    return data if isinstance(data, dict) else None


def _data(project: Project, lock: dict[str, Any], cwd: Path, remember: bool) -> dict[str, Any]:
    found: dict[str, Any] = {}
    recorded: dict[str, str] = {}
    for entry in lock.values():
        recorded.update(vcs.hashes(entry, "deps"))
    found["changed"] = tuple(d for d in watched(project) if d in recorded
                             and checkout.differs(d, recorded[d], cwd))
    failed = audit.read(cwd / project.record(workspace.FAILED_CANDIDATE), None)
    if isinstance(failed, dict):
        found["failed_build"] = failed
        found["inputs_moved"] = tuple(p for p, md5 in inputs(project, cwd).items()
                                      if (failed.get("inputs") or {}).get(p) != md5)
    edited = params_changed(upstream(lock, project.model.stages), cwd)
    if edited:
        rejected = audit.read(cwd / project.record(workspace.REJECTED_PARAMS), None)
        found["edited_params"] = tuple(edited)
        found["params_rejected"] = isinstance(rejected, dict) and all(
            rejected.get(f) == md5 for f, md5 in files_of(edited, cwd).items())
    try:
        faulty, left = data_faults(project, cwd, remember)
        found["faulty"], found["faults_left"] = tuple(faulty.values()), tuple(left)
    except SelfHealError as exc:  # a missing file, an unknown target column, data no fix can get past
        found["data_error"] = str(exc)
    if project.params is not None:
        found["data_quality"] = _json(cwd / workspace.DATA_QUALITY)
    return found


def _altered(path: str, md5: str, cwd: Path) -> str | None:
    """How a version output is not the bytes dvc.lock pins (None: it is)."""
    if not checkout.differs(path, md5, cwd):
        return None
    if not (cwd / path).exists():
        return f"{path} is missing"
    if md5.endswith(".dir"):
        return f"{path} differs from the directory dvc.lock pins ({md5})"
    return f"{path} is md5 {atomic.md5_file(cwd / path)}, not the {md5} dvc.lock pins"


def _model(project: Project, lock: dict[str, Any], cwd: Path, built: bool, versions: catalog.Versions
           ) -> dict[str, Any]:
    from selfheal.versions.rollback import held_back, hold_note

    prod = versions.production()
    found: dict[str, Any] = {"production": versions.record(prod) if prod else None}
    if not built:
        return found
    try:
        hashes = catalog.candidate(project, lock)
    except SelfHealError as exc:
        return found | {"candidate_error": str(exc)}
    ident = catalog.identity(hashes)
    ours = prod is not None and ident == found["production"]["md5"]
    if ours:  # every output of the version stages (an evaluation directory too) as dvc.lock pins it
        pinned = {p: md5 for s in project.model.stages for p, md5 in vcs.hashes(lock.get(s) or {}).items() if md5}
    else:  # a candidate's model files; its directories only when missing (a rollback replaces them whole anyway)
        pinned = {p: md5 for p, md5 in hashes.items() if not md5.endswith(".dir") or not (cwd / p).is_dir()}
    found |= {"candidate": ident, "altered": tuple(filter(None, (_altered(p, md5, cwd) for p, md5 in pinned.items()))),
              "held_back": {md5: hold_note(hold) for md5, hold in held_back(project, cwd).items()}}
    if not ours:
        found["registered"] = frozenset(filter(None, map(versions.identity, versions.known)))
    try:  # production judged on its own (a raised bound), a candidate against production
        found["verdict"] = gate.verdict(project, cwd, versions, None if ours else prod)
    except SelfHealError as exc:
        found["verdict_error"] = str(exc)
    except ValueError:
        pass  # a damaged record is as good as none: the pipeline rewrites it
    return found


def _drift(project: Project, lock: dict[str, Any], cwd: Path, remember: bool,
           versions: catalog.Versions | None = None) -> dict[str, Any]:
    """`versions`: the registry as observe read it (read here only when drift is detected, if not given)."""
    log = cwd / project.record(workspace.RETRAINING_LOG)
    found: dict[str, Any] = {"last_retrain": last_retrain_time(log)}
    if (params := project.params) is not None:  # our monitor stage measures drift: its report must describe the model
        drift = _json(cwd / workspace.DRIFT)
        found |= {"monitor_stage": True, "drift": drift, "drift_path": str(workspace.DRIFT),
                  # a report from before drift.json named its model: the model the monitor stage last read
                  "monitored": (drift or {}).get("model_md5")
                  or vcs.hashes(lock.get("monitor", {}), "deps").get(project.model.outs[0])}
        current = cwd / params.data.current
    elif project.drift is not None:
        from selfheal.healing.measure import measure_drift

        try:
            found["drift"] = measure_drift(project, cwd, remember)
        except SelfHealError as exc:
            found["drift_error"] = str(exc)
        current = cwd / project.drift.current
    else:
        return found  # retrained on schedule only: the cooldown alone decides
    if (found.get("drift") or {}).get("drift_detected"):
        versions = catalog.Versions(project, cwd) if versions is None else versions
        found["batch_retrained"] = batch_retrained(current, log, versions)
        if found["last_retrain"] is None:  # a clone without the retraining log keeps the cooldown too
            found["last_retrain"] = _last_retrained(versions)
    return found


def _service(project: Project, cwd: Path) -> dict[str, Any]:
    health: Health | None = None
    restartable = True
    if (params := project.params) is not None:
        from selfheal.service import procs

        if procs.read_pid_file() is None:
            stop = procs.read_stop()
            return {"service": {"state": "stopped", "detail": procs.stopped_note(stop)} if stop else
                    {"state": "absent", "detail": "no service was started in this project"}}
        from selfheal.service.client import check_health

        sr = params.service_recovery
        health = check_health(sr.service_url, sr.health_timeout_seconds)
    elif project.service is not None and project.service.health is not None:
        from selfheal.service.client import probe

        health = probe(project.service.health, project.service.health_timeout_seconds)
        restartable = bool(project.service.start) or (health.state == "unhealthy" and project.service.reload is not None)
    if health is None:
        return {}
    found: dict[str, Any] = {"service": {"state": health.state, "detail": health.detail}, "restartable": restartable}
    if not health.healthy:
        from selfheal.recovery.turns import running_watcher

        watcher = running_watcher()
        found["watcher"] = watcher["pid"] if watcher else None
        found["escalated"] = {"service": str(record.get("reason"))} if (
            record := escalation.pending("service", cwd / workspace.ESCALATED)) else {}
    return found


def observe(project: Project, cwd: Path = Path("."), remember: bool = True) -> Observations:
    """Everything the policy decides on; `remember` keeps what was measured (clean data, drift) for next time."""
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    built = all(stage in lock for stage in project.model.stages)
    versions = catalog.Versions(project, cwd)
    return Observations(
        now=datetime.now(UTC), built=built,
        **_data(project, lock, cwd, remember),
        **_model(project, lock, cwd, built, versions),
        **_drift(project, lock, cwd, remember, versions),
        **_service(project, cwd),
        logs={issue: audit.entries(cwd / project.record(path)) for issue, path in LOGS.items()},
    )


def drift_observations(project: Project, cwd: Path = Path("."),
                       remember: bool = True) -> Observations:
    """Only what a retrain is decided on: the drift measurement, the last retrain, the batch."""
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    return Observations(now=datetime.now(UTC), **_drift(project, lock, cwd, remember))
