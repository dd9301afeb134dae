"""Roll production back to a registered version: a checkout of that revision's model and its metrics.

What is restored: the `train` and `validate` stages of the version's dvc.lock (model.joblib, model.json, the
drift reference, the holdout, metrics/train.json, metrics/validation.json and its plots) and its
models/production.json - each file's bytes verified against the md5 that revision recorded. Nothing is retrained.
What is not: the data stages (fix_data, monitor) keep describing your current inputs, and params.yaml stays
yours, so `dvc status` afterwards says honestly where the workspace differs from the restored version.
The failed candidate stays in the DVC cache; the rollback log names it with both hashes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from selfheal import audit, registry, vcs
from selfheal import io as sio
from selfheal.errors import SelfHealError
from selfheal.modelio import MODEL_FILE
from selfheal.registry import Version
from selfheal.restore import fetch_revision, from_revision, restore_stages

STAGES = ["train", "validate"]
VALIDATION_FILE = Path("metrics/validation.json")


class NothingToRestore(SelfHealError):
    """No earlier good version exists: rollback changes nothing and says so."""

    exit_code = 1


def choose_target(bad_md5: str | None, known: list[Version], history: list[registry.Assignment],
                  production: dict[str, Any] | None) -> Version | None:
    """The last good production version that is not the bad model: production itself when the bad model is a
    new candidate, else the version production held before (walking the assignment history back)."""
    by_name = {v.name: v for v in known}
    names = [production["version"]] if production else []
    names += [a.version for a in reversed(history)] + [v.name for v in reversed(known)]
    for name in names:
        v = by_name.get(name)
        if v and v.md5 != bad_md5:
            return v
    return None


def failure_reason(validation: dict[str, Any]) -> str:
    """The seed's wording: "Model r2 0.65 below threshold 0.70" (or the relative drop, or the recorded reasons)."""
    name, metric, threshold = validation.get("metric_name"), validation.get("metric"), validation.get("threshold")
    if isinstance(metric, (int, float)) and isinstance(threshold, (int, float)) and metric < threshold:
        return f"Model {name} {metric:.3f} below threshold {threshold:.2f}"
    return "Model failed validation: " + "; ".join(validation.get("reasons") or ["no reason recorded"])


def restore(target: Version, cwd: str | Path = ".") -> dict[str, str]:
    """Check out `target`'s model stages and production record; returns the restored {path: md5}."""
    lock = vcs.parse_lock(vcs.show(target.commit, vcs.LOCK_FILE, cwd))
    prod = vcs.show(target.commit, registry.PRODUCTION_FILE, cwd)
    if prod is None:
        raise SelfHealError(f"{target.tag}: its revision has no {registry.PRODUCTION_FILE}; nothing was changed")
    restored = restore_stages(
        lock, STAGES, from_revision(target.commit, cwd), cwd,
        extra={str(registry.PRODUCTION_FILE): prod}, last=str(VALIDATION_FILE),
        fetch=lambda: fetch_revision(target.commit, cwd),
    )
    model_md5 = restored.get(str(MODEL_FILE))
    if model_md5 is None or sio.md5_file(Path(cwd) / MODEL_FILE) != target.md5:
        raise SelfHealError(f"{MODEL_FILE}: after restoring {target.tag} its md5 is not the registered {target.md5}")
    return restored


def rollback(
    *,
    version: str | None = None,
    current_metric: float | None = None,
    threshold: float | None = None,
    reason: str | None = None,
    service_url: str | None = None,
    cwd: str | Path = ".",
) -> dict[str, Any] | None:
    """Manual (`version`) or automatic rollback; returns the log entry, or None when nothing needs doing.

    Automatic: when `current_metric` is below `threshold`, when a `reason` says the workspace model file itself
    is bad (heal found it corrupted, replaced or missing), or else when the latest validation failed.
    Raises NothingToRestore, after logging the attempt, when there is no earlier good version.
    """
    started = time.perf_counter()
    cwd = Path(cwd)
    known = registry.versions(cwd)
    model = cwd / MODEL_FILE
    bad_md5 = sio.md5_file(model) if model.exists() else None
    if version is not None:
        action, target = "manual_rollback", registry.find(version, known)
        reason = f"Manual rollback to {target.name} requested"
    else:
        action = "auto_rollback"
        if reason is not None:
            _keep(model, bad_md5, cwd)
        elif current_metric is not None:
            if threshold is None:
                raise SelfHealError("--current-metric needs --threshold (or min_accuracy_threshold in params.yaml)")
            if current_metric >= threshold:
                print(f"Model metric {current_metric:.3f} meets threshold {threshold:.2f}: no rollback needed")
                return None
            reason = f"Model accuracy {current_metric:.2f} below threshold {threshold:.2f}"
        else:
            validation = sio.read_json(cwd / VALIDATION_FILE)
            if validation is None:
                raise SelfHealError(f"{VALIDATION_FILE}: not found; run `dvc repro` first (or pass --version)")
            if validation.get("passed"):
                print(f"Latest validation passed ({validation.get('metric_name')} "
                      f"{validation.get('metric', float('nan')):.3f}): no rollback needed")
                return None
            bad_md5 = validation.get("model_md5") or bad_md5
            reason = failure_reason(validation)
        target = choose_target(bad_md5, known, registry.assignments(cwd), registry.production(cwd / registry.PRODUCTION_FILE))
    failed = registry.by_md5(bad_md5, known)
    details = {
        "failed_version": failed.name if failed else (f"candidate-{bad_md5[:12]}" if bad_md5 else None),
        "failed_md5": bad_md5,
        "failed_cache": _shown(vcs.cache_path(bad_md5, cwd), cwd) if bad_md5 else None,
    }
    print(f"⚠️  {reason}" if action == "auto_rollback" else reason)
    if target is None:
        audit.append(cwd / audit.ROLLBACK_LOG, action, reason, False, version_restored=None, **details,
                     restored_md5=None, message="no earlier good version")
        raise NothingToRestore("no earlier good model version to roll back to; nothing was changed")
    print(f"🔄 Rolling back to {target.name} ({target.alias or target.commit[:10]})")
    restore(target, cwd)
    registry.assign_production(target, reason, cwd)
    reloaded = reload_service(service_url, target.md5)
    entry = audit.append(
        cwd / audit.ROLLBACK_LOG, action, reason, True,
        version_restored=target.name, version_alias=target.alias, restored_md5=target.md5, **details,
        service_reloaded=reloaded, duration_s=round(time.perf_counter() - started, 3),
    )
    print(f"✅ Successfully rolled back: {MODEL_FILE} is {target.name} (md5 {target.md5}, verified)")
    if details["failed_md5"] and details["failed_md5"] != target.md5:
        print(f"   the failed model {details['failed_version']} is kept in the DVC cache: {details['failed_cache']}")
    return entry


def _keep(model: Path, md5: str | None, cwd: Path) -> None:
    """Put a model file the pipeline did not make into the DVC cache before it is replaced, so it can be examined
    (its cache path is logged, as for a failed candidate)."""
    cached = vcs.cache_path(md5, cwd) if md5 else None
    if cached is not None and not cached.exists():
        sio.write_bytes(cached, model.read_bytes())


def _shown(path: Path, cwd: Path) -> str:
    try:
        return str(path.resolve().relative_to(cwd.resolve()))
    except ValueError:
        return str(path)


def reload_service(service_url: str | None, md5: str | None = None) -> bool | None | str:
    """Ask a running prediction service to swap to the restored model (True/False; None: signalled, see /health).

    No service running is normal (False); a service that refuses is reported, never undoing the rollback."""
    if not service_url:
        return False
    from selfheal.service.client import request_reload

    try:
        result = request_reload(service_url, expected_md5=md5)
    except Exception as exc:  # a failed reload must not turn a finished rollback into an error
        return f"not reloaded: {type(exc).__name__}: {exc}"
    if result.get("reloaded") is False and result.get("via"):
        return f"not reloaded: {result.get('error') or result}"
    return result.get("reloaded")
