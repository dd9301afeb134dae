"""Roll production back to a registered version: a checkout of that revision's model stages, for every project kind.

What is restored: the project's model stages (selfheal.yaml `model.stages`; our pipeline: `train` and `validate`,
so the model, its metadata, the drift reference, the holdout, the metrics, the verdict and its plots) as the
version's dvc.lock recorded them - each file's bytes verified against that md5 - and the version is assigned
production in the registry. Nothing is retrained. What is not: the stages that describe your inputs and your
params stay yours, so `dvc status` afterwards says honestly where the workspace differs from the restored
version. The failed candidate is kept in the DVC cache (and pushed to the default remote); the rollback log
names it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, journal, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, current
from selfheal.versions import gate, registry, vcs
from selfheal.versions.catalog import Versions, identity, model_hashes
from selfheal.versions.checkout import Reload, fetch_revision, from_revision, push_object, restore_stages
from selfheal.versions.params_edits import remember_rejected
from selfheal.versions.registry import Version


class NothingToRestore(SelfHealError):
    """No earlier good version exists: rollback changes nothing and says so."""

    exit_code = 1


def choose_target(bad: str | None, known: list[Version], history: list[registry.Assignment],
                  rejected: frozenset[str] | set[str] = frozenset(),
                  ident: Callable[[Version], str | None] = lambda v: v.md5,
                  usable: Callable[[Version], bool] = lambda v: True) -> Version | None:
    """The last good production version that is not the bad model (by `ident`): production (the latest
    assignment) when the bad model is a new candidate, else the version production held before (walking the
    assignment history back). A version an earlier rollback `rejected` is never chosen: two rollbacks in a row
    must not bring it back; nor is one whose outputs cannot be restored (`usable`)."""
    by_name = {v.name: v for v in known}
    names = [a.version for a in reversed(history)] + [v.name for v in reversed(known)]
    for name in dict.fromkeys(names):
        v = by_name.get(name)
        if v and ident(v) != bad and v.name not in rejected and usable(v):
            return v
    return None


def held_back(project: Project, cwd: str | Path = ".") -> dict[str, dict[str, Any]]:
    """{model identity: {version, at, ...}} of the models a person rolled back from (`selfheal rollback --version`):
    heal does not promote them again - a rebuild from the same inputs (DVC's run cache) makes the same bytes - until
    their inputs or code change (other bytes), or a person promotes one (`selfheal promote`)."""
    data = audit.read(Path(cwd) / project.record(workspace.HELD_BACK), {})
    return data if isinstance(data, dict) else {}


def hold_note(hold: dict[str, Any]) -> str:
    """Why heal leaves a held-back model alone, for its report."""
    return (f"it is {hold.get('version')}, which a person rolled back from at {hold.get('at')}: not promoted again "
            "until its inputs or code change (other bytes), or `selfheal promote` promotes it")


def release(project: Project, ident: str | None, cwd: str | Path = ".") -> None:
    """A person promoted this model: it is no longer held back."""
    if ident and ident in held_back(project, cwd):
        audit.update(Path(cwd) / project.record(workspace.HELD_BACK),
                     lambda data: {k: v for k, v in (data or {}).items() if k != ident}, default={})


def rejected_versions(project: Project, cwd: str | Path = ".") -> set[str]:
    """Versions an automatic rollback took out of production (`rejected_version` in the rollback log) that no
    person has brought back since: a manual `selfheal rollback --version` to it, or a promotion of it, clears it."""
    cwd = Path(cwd)
    events = [(str(e.get("timestamp")), e.get("rejected_version"), e.get("version_restored"))
              for e in audit.entries(cwd / project.record(workspace.ROLLBACK_LOG)) if e.get("success")]
    events += [(str(e.get("timestamp")), None, e.get("version"))
               for e in audit.entries(cwd / project.record(workspace.HEAL_LOG)) if e.get("action") == "promote"]
    rejected: set[str] = set()
    for _, bad, restored in sorted(events, key=lambda e: e[0]):
        if bad:
            rejected.add(bad)
        if restored and restored != bad:
            rejected.discard(restored)
    return rejected


def failure_reason(verdict: dict[str, Any]) -> str:
    """The guide's wording: "Model r2 0.65 below threshold 0.70" (or the gate's failed checks)."""
    name, metric, threshold = verdict.get("metric_name"), verdict.get("metric"), verdict.get("threshold")
    if isinstance(metric, (int, float)) and isinstance(threshold, (int, float)) and metric < threshold:
        return f"Model {name} {metric:.3f} below threshold {threshold:.2f}"
    return "Model failed the gate: " + "; ".join(verdict.get("failures") or ["no reason recorded"])


def _model_file(project: Project) -> str | None:
    """The model output when it is one file (its bytes can be hashed and kept as they are); None otherwise."""
    return project.model.outs[0] if len(project.model.outs) == 1 else None


def _workspace_identity(project: Project, cwd: Path) -> str | None:
    """The workspace model's identity: a single model file's own md5 (a corrupted or replaced file counts as
    itself), else what dvc.lock records for the model outputs."""
    single = _model_file(project)
    if single is not None and not (cwd / single).is_dir():
        return atomic.md5_file(cwd / single) if (cwd / single).is_file() else None
    return identity(model_hashes(vcs.read_lock(cwd / workspace.DVC_LOCK), project))


def restore(project: Project, versions: Versions, target: Version, cwd: Path) -> dict[str, str]:
    """Check out `target`'s model stages, each output verified; returns the restored {path: md5}."""
    lock = versions.lock(target)
    restored = restore_stages(lock, project.model.stages, from_revision(target.commit, cwd), cwd,
                              last=project.gate.metrics, fetch=lambda: fetch_revision(target.commit, cwd))
    wrong = [out for out, md5 in model_hashes(lock, project).items()
             if restored.get(out) != md5 or (not md5.endswith(".dir") and atomic.md5_file(cwd / out) != md5)]
    if wrong:
        raise SelfHealError(f"{', '.join(wrong)}: after restoring {target.tag} not the bytes its dvc.lock pins")
    return restored


def rollback(
    project: Project | None = None,
    *,
    version: str | None = None,
    current_metric: float | None = None,
    threshold: float | None = None,
    reason: str | None = None,
    reload: Reload | None = None,
    cwd: str | Path = ".",
) -> dict[str, Any] | None:
    """Manual (`version`) or automatic rollback; returns the log entry, or None when nothing needs doing.

    Automatic: when `current_metric` is below `threshold`, when a `reason` says the workspace model itself is
    bad (heal found it corrupted, replaced or missing; with `version`: production's own outputs to restore), or
    else when the candidate fails the gate. Raises NothingToRestore, after logging the attempt, when there is no
    earlier good version.
    """
    started = time.perf_counter()
    cwd = Path(cwd)
    project = project or current(cwd)
    log = cwd / project.record(workspace.ROLLBACK_LOG)
    shared = registry.shared_remote(cwd)
    if shared:  # the versions and assignments other runners made
        registry.sync(shared, cwd, project.model.artifact)
    versions = Versions(project, cwd)
    bad = _workspace_identity(project, cwd)
    target: Version | None
    rejected: set[str] = set()
    if version is not None:  # named by a person, or by heal restoring production's own outputs (with a reason)
        action, target = ("manual_rollback" if reason is None else "auto_rollback"), versions.find(version)
        reason = reason or f"Manual rollback to {target.name} requested"
    else:
        action = "auto_rollback"
        # a given `reason`: the workspace model itself is bad; it is kept below like a failed candidate
        if reason is None and current_metric is not None:
            if threshold is None:
                raise SelfHealError("--current-metric needs --threshold (or min_accuracy_threshold in params.yaml)")
            if current_metric >= threshold:
                print(f"Model metric {current_metric:.3f} meets threshold {threshold:.2f}: no rollback needed")
                return None
            reason = f"Model accuracy {current_metric:.2f} below threshold {threshold:.2f}"
        elif reason is None:
            verdict = gate.judged(versions)
            if verdict is None:
                raise SelfHealError(f"{project.gate.metrics}: not found; run `dvc repro` first (or pass --version)")
            if verdict.get("passed"):
                print(f"The candidate passes the gate ({verdict.get('metric_name')} "
                      f"{verdict.get('metric', float('nan')):.3f}): no rollback needed")
                return None
            bad = verdict.get("model_md5") or bad
            reason = failure_reason(verdict)
        rejected = rejected_versions(project, cwd)
        target = choose_target(bad, versions.known, versions.history, rejected, versions.identity,
                               versions.reachable)
    failed = versions.by_identity(bad)
    single = _model_file(project)
    details = {
        "failed_version": failed.name if failed else (f"candidate-{bad[:12]}" if bad else None),
        "failed_md5": bad,
        **(keep_failed(cwd / single, bad, cwd) if bad and single and not bad.endswith(".dir")
           else {"failed_cache": None, "failed_remote": None}),
    }
    print(f"⚠️  {reason}" if action == "auto_rollback" else reason)
    if target is None:
        audit.append(log, action, reason, False, version_restored=None, **details, restored_md5=None,
                     message="no earlier good version")
        held_back = sorted(rejected - {details["failed_version"]}) if version is None else []
        hint = (f" ({', '.join(held_back)} rejected by an earlier rollback; `selfheal rollback --version "
                f"{held_back[-1]}` restores it)" if held_back else "")
        raise NothingToRestore(f"no earlier good {project.model.artifact} version to roll back to{hint}; "
                               "nothing was changed")
    print(f"🔄 Rolling back to {target.name} ({target.alias or target.commit[:10]})")
    rejects = failed.name if failed and action == "auto_rollback" and failed.name != target.name else None
    ident = versions.identity(target)
    lock = versions.lock(target)
    done = {"version_restored": target.name, "version_alias": target.alias, "tag": target.tag, "restored_md5": ident,
            **details, "rejected_version": rejects,
            "restored": sorted({p for s in project.model.stages for p in vcs.hashes(lock.get(s) or {})})}
    files = {str(cwd / out): md5 for out, md5 in model_hashes(lock, project).items() if not md5.endswith(".dir")}
    with journal.intent(action, log, reason, version=target.name) as record:
        journal.note(record, files, done)
        restore(project, versions, target, cwd)
        if action == "auto_rollback" and version is None:  # a judged candidate: not built again from its params
            remember_rejected(project, cwd)
        atomic.pause_at("rollback:restored")
        assigned = registry.assign_production(target, reason, cwd, shared, stage=project.gate.stage)
        reloaded = reload(ident) if reload else False
        recovered_s = round(time.perf_counter() - started, 3)  # the time to recover: verified and serving
        refused = (bad, reason) if action == "auto_rollback" and bad and bad != ident else None
        mlflow_version = registry.mlflow_alias(target, ident, cwd, refused)  # bookkeeping (MLflow imports), after
        entry = audit.append(log, action, reason, True, **done, assigned=assigned, service_reloaded=reloaded,
                             mlflow_version=mlflow_version, duration_s=recovered_s)
        if action == "manual_rollback" and bad and bad != ident:  # a person's choice sticks (see held_back)
            audit.update(cwd / project.record(workspace.HELD_BACK), lambda data: {
                **(data or {}), bad: {"version": details["failed_version"], "at": entry["timestamp"],
                                      "restored": target.name}}, default={})
    print(f"✅ Successfully rolled back: {', '.join(project.model.outs)} are {target.tag}'s (md5 {ident}, verified)")
    if details["failed_md5"] and details["failed_md5"] != ident:
        print(f"   {kept_line(details, 'failed' if action == 'auto_rollback' else 'replaced')}")
    return entry


def keep_failed(model: Path, md5: str, cwd: Path) -> dict[str, str | None]:
    """Keep the failed model's bytes where the rollback says they are: in the DVC cache (copied from the workspace
    file if the cache lacks them, e.g. a file the pipeline did not make, or a cleared cache) and on the default
    DVC remote when one is configured. Returns {failed_cache, failed_remote}: each None where it is not."""
    cached = vcs.cache_path(md5, cwd)
    if not cached.is_file() and model.is_file() and atomic.md5_file(model) == md5:
        atomic.write_bytes(cached, model.read_bytes())
    if not cached.is_file():
        return {"failed_cache": None, "failed_remote": None}
    remote = vcs.default_remote(cwd)
    if remote:
        try:
            push_object(md5, remote, cwd)
        except SelfHealError as exc:
            print(f"   ⚠️  {exc}")
            remote = None
    return {"failed_cache": _shown(cached, cwd), "failed_remote": remote}


def kept_line(details: dict[str, Any], what: str = "failed") -> str:
    """Where the replaced model's bytes are, as the rollback made sure (see keep_failed): `what` it was, "failed"
    for an automatic rollback, "replaced" for a person's choice of another version."""
    name, cache, remote = details["failed_version"], details.get("failed_cache"), details.get("failed_remote")
    if not cache:
        return f"the {what} model {name} (md5 {details['failed_md5']}) was in neither the workspace nor the DVC cache"
    return f"the {what} model {name} is kept in the DVC cache: {cache}" + (
        f" (and pushed to DVC remote '{remote}')" if remote else "")


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)

