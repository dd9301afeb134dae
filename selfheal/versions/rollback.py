"""Roll production back to a registered version: a checkout of that revision's model and its metrics.

What is restored: the `train` and `validate` stages of the version's dvc.lock (model.joblib, model.json, the
drift reference, the holdout, metrics/train.json, the verdict metrics/records/validation.json and its plots) -
each file's bytes verified against the md5 that revision recorded - and the version is assigned production in
the registry. Nothing is retrained.
What is not: the data stages (fix_data, monitor) keep describing your current inputs, and params.yaml stays
yours, so `dvc status` afterwards says honestly where the workspace differs from the restored version.
The failed candidate is kept in the DVC cache (and pushed to the default remote); the rollback log names it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, journal, workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import registry, vcs
from selfheal.versions.checkout import Reload, fetch_revision, from_revision, push_object, restore_stages
from selfheal.versions.registry import Version

STAGES = ["train", "validate"]


class NothingToRestore(SelfHealError):
    """No earlier good version exists: rollback changes nothing and says so."""

    exit_code = 1


def choose_target(bad_md5: str | None, known: list[Version], history: list[registry.Assignment],
                  rejected: frozenset[str] | set[str] = frozenset()) -> Version | None:
    """The last good production version that is not the bad model: production (the latest assignment) when the
    bad model is a new candidate, else the version production held before (walking the assignment history
    back). A version an earlier rollback `rejected` is never chosen: two rollbacks in a row must not bring it
    back."""
    by_name = {v.name: v for v in known}
    names = [a.version for a in reversed(history)] + [v.name for v in reversed(known)]
    for name in names:
        v = by_name.get(name)
        if v and v.md5 != bad_md5 and v.name not in rejected:
            return v
    return None


def rejected_versions(cwd: str | Path = ".") -> set[str]:
    """Versions an automatic rollback took out of production (`rejected_version` in the rollback log) that no
    person has brought back since: a manual `selfheal rollback --version` to it, or a promotion of it, clears it."""
    cwd = Path(cwd)
    events = [(str(e.get("timestamp")), e.get("rejected_version"), e.get("version_restored"))
              for e in audit.entries(cwd / workspace.ROLLBACK_LOG) if e.get("success")]
    events += [(str(e.get("timestamp")), None, e.get("version"))
               for e in audit.entries(cwd / workspace.HEAL_LOG) if e.get("action") == "promote"]
    rejected: set[str] = set()
    for _, bad, restored in sorted(events, key=lambda e: e[0]):
        if bad:
            rejected.add(bad)
        if restored and restored != bad:
            rejected.discard(restored)
    return rejected


def failure_reason(validation: dict[str, Any]) -> str:
    """The guide's wording: "Model r2 0.65 below threshold 0.70" (or the relative drop, or the recorded reasons)."""
    name, metric, threshold = validation.get("metric_name"), validation.get("metric"), validation.get("threshold")
    if isinstance(metric, (int, float)) and isinstance(threshold, (int, float)) and metric < threshold:
        return f"Model {name} {metric:.3f} below threshold {threshold:.2f}"
    return "Model failed validation: " + "; ".join(validation.get("reasons") or ["no reason recorded"])


def restore(target: Version, cwd: str | Path = ".") -> dict[str, str]:
    """Check out `target`'s model stages; returns the restored {path: md5}."""
    lock = vcs.parse_lock(vcs.show(target.commit, workspace.DVC_LOCK, cwd))
    restored = restore_stages(lock, STAGES, from_revision(target.commit, cwd), cwd, last=str(workspace.VALIDATION),
                              fetch=lambda: fetch_revision(target.commit, cwd))
    model_md5 = restored.get(str(workspace.MODEL))
    if model_md5 is None or atomic.md5_file(Path(cwd) / workspace.MODEL) != target.md5:
        raise SelfHealError(f"{workspace.MODEL}: after restoring {target.tag} its md5 is not the registered {target.md5}")
    return restored


def rollback(
    *,
    version: str | None = None,
    current_metric: float | None = None,
    threshold: float | None = None,
    reason: str | None = None,
    reload: Reload | None = None,
    cwd: str | Path = ".",
) -> dict[str, Any] | None:
    """Manual (`version`) or automatic rollback; returns the log entry, or None when nothing needs doing.

    Automatic: when `current_metric` is below `threshold`, when a `reason` says the workspace model file itself
    is bad (heal found it corrupted, replaced or missing), or else when the latest validation failed.
    Raises NothingToRestore, after logging the attempt, when there is no earlier good version.
    """
    started = time.perf_counter()
    cwd = Path(cwd)
    shared = registry.shared_remote(cwd)
    if shared:  # the versions and assignments other runners made
        registry.sync(shared, cwd)
    known = registry.versions(cwd)
    model = cwd / workspace.MODEL
    bad_md5 = atomic.md5_file(model) if model.exists() else None
    target: Version | None
    rejected: set[str] = set()
    if version is not None:
        action, target = "manual_rollback", registry.find(version, known)
        reason = f"Manual rollback to {target.name} requested"
    else:
        action = "auto_rollback"
        # a given `reason`: the workspace model file itself is bad; it is kept below like a failed candidate
        if reason is None and current_metric is not None:
            if threshold is None:
                raise SelfHealError("--current-metric needs --threshold (or min_accuracy_threshold in params.yaml)")
            if current_metric >= threshold:
                print(f"Model metric {current_metric:.3f} meets threshold {threshold:.2f}: no rollback needed")
                return None
            reason = f"Model accuracy {current_metric:.2f} below threshold {threshold:.2f}"
        elif reason is None:
            from selfheal.versions.promote import candidate_verdict

            validation = candidate_verdict(cwd, registry.production_record(cwd, known))
            if validation is None:
                raise SelfHealError(f"{workspace.VALIDATION}: not found; run `dvc repro` first (or pass --version)")
            if validation.get("passed"):
                print(f"Latest validation passed ({validation.get('metric_name')} "
                      f"{validation.get('metric', float('nan')):.3f}): no rollback needed")
                return None
            bad_md5 = validation.get("model_md5") or bad_md5
            reason = failure_reason(validation)
        rejected = rejected_versions(cwd)
        target = choose_target(bad_md5, known, registry.assignments(cwd), rejected)
    failed = registry.by_md5(bad_md5, known)
    details = {
        "failed_version": failed.name if failed else (f"candidate-{bad_md5[:12]}" if bad_md5 else None),
        "failed_md5": bad_md5,
        **(keep_failed(model, bad_md5, cwd) if bad_md5 else {"failed_cache": None, "failed_remote": None}),
    }
    print(f"⚠️  {reason}" if action == "auto_rollback" else reason)
    if target is None:
        audit.append(cwd / workspace.ROLLBACK_LOG, action, reason, False, version_restored=None, **details,
                     restored_md5=None, message="no earlier good version")
        held_back = sorted(rejected - {details["failed_version"]}) if version is None else []
        hint = (f" ({', '.join(held_back)} rejected by an earlier rollback; `selfheal rollback --version "
                f"{held_back[-1]}` restores it)" if held_back else "")
        raise NothingToRestore(f"no earlier good model version to roll back to{hint}; nothing was changed")
    print(f"🔄 Rolling back to {target.name} ({target.alias or target.commit[:10]})")
    rejects = failed.name if failed and action == "auto_rollback" and failed.name != target.name else None
    done = {"version_restored": target.name, "version_alias": target.alias, "restored_md5": target.md5, **details,
            "rejected_version": rejects}
    with journal.intent(action, cwd / workspace.ROLLBACK_LOG, reason, version=target.name) as record:
        journal.note(record, {str(cwd / workspace.MODEL): target.md5 or ""}, done)
        restore(target, cwd)
        atomic.pause_at("rollback:restored")
        registry.assign_production(target, reason, cwd, shared)
        reloaded = reload(target.md5) if reload else False
        recovered_s = round(time.perf_counter() - started, 3)  # the time to recover: verified and serving
        mlflow_version = registry.mlflow_alias(target, cwd)  # bookkeeping (seconds of MLflow imports), after
        entry = audit.append(cwd / workspace.ROLLBACK_LOG, action, reason, True, **done, service_reloaded=reloaded,
                             mlflow_version=mlflow_version, duration_s=recovered_s)
    print(f"✅ Successfully rolled back: {workspace.MODEL} is {target.name} (md5 {target.md5}, verified)")
    if details["failed_md5"] and details["failed_md5"] != target.md5:
        print(f"   {kept_line(details)}")
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


def kept_line(details: dict[str, Any]) -> str:
    """Where the failed model's bytes are, as the rollback made sure (see keep_failed)."""
    name, cache, remote = details["failed_version"], details.get("failed_cache"), details.get("failed_remote")
    if not cache:
        return f"the failed model {name} (md5 {details['failed_md5']}) was in neither the workspace nor the DVC cache"
    return f"the failed model {name} is kept in the DVC cache: {cache}" + (
        f" (and pushed to DVC remote '{remote}')" if remote else "")


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)

