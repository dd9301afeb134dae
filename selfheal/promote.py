"""Promote the validated model: push its bytes, record production, commit, tag the version. And the model gate.

Every step is idempotent and ordered so that an interrupted promotion is finished by simply running it again:
push (nothing visible changes) -> models/production.json -> `dvc commit validate` (production.json is a dep of
validate) -> a git commit of exactly the pipeline's state -> the version tag and the production assignment.
"""

from __future__ import annotations

import configparser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfheal import audit, registry, vcs
from selfheal import io as sio
from selfheal.errors import SelfHealError
from selfheal.modelio import META_FILE, MODEL_FILE
from selfheal.rollback import VALIDATION_FILE, reload_service, rollback

META_KEYS = ["task", "target", "model", "params", "data_md5", "trained_at", "n_train", "n_holdout"]


def passing_candidate(cwd: Path) -> tuple[dict[str, Any], str]:
    """(validation, model md5) when the workspace model passed validation and dvc.lock pins it; else an error."""
    validation = sio.read_json(cwd / VALIDATION_FILE)
    if validation is None:
        raise SelfHealError(f"{VALIDATION_FILE}: not found; run `dvc repro` first")
    md5 = sio.md5_file(cwd / MODEL_FILE) if (cwd / MODEL_FILE).exists() else None
    if validation.get("model_md5") != md5:
        raise SelfHealError(f"{VALIDATION_FILE} describes model {validation.get('model_md5')}, but {MODEL_FILE} "
                            f"is {md5}; run `dvc repro` so the model is validated")
    if not validation.get("passed"):
        raise SelfHealError(f"{MODEL_FILE} failed validation ({'; '.join(validation.get('reasons', []))}); "
                            "only a model that passed can be promoted")
    pinned = vcs.hashes(vcs.read_lock(cwd / vcs.LOCK_FILE).get("train", {})).get(str(MODEL_FILE))
    if pinned != md5:
        raise SelfHealError(f"dvc.lock does not pin {MODEL_FILE} (md5 {md5}); run `dvc repro` first")
    return validation, md5


def _remote(cwd: Path) -> str | None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read([cwd / ".dvc/config", cwd / ".dvc/config.local"])
    return parser.get("core", "remote", fallback=None)


def _commit_paths(cwd: Path) -> list[str]:
    """What a version's commit holds: dvc.lock, params, production record, metrics and plots, DVC's .gitignores."""
    lock = vcs.read_lock(cwd / vcs.LOCK_FILE)
    dvc_yaml = cwd / vcs.DVC_YAML
    not_cached = {p for paths in vcs.git_tracked_outputs(dvc_yaml).values() for p in paths}
    in_git = {p for paths in vcs.git_tracked_outputs(dvc_yaml, ("metrics", "plots")).values() for p in paths}
    cached = {p for entry in lock.values() for p in vcs.hashes(entry)} - not_cached
    paths = ["dvc.lock", "params.yaml", str(registry.PRODUCTION_FILE), *sorted(in_git)]
    paths += sorted({str(Path(p).parent / ".gitignore") for p in cached})
    return [p for p in dict.fromkeys(paths) if (cwd / p).exists()]


def promote(*, reason: str = "passed validation", service_url: str | None = None, cwd: str | Path = ".") -> dict:
    """Make the validated workspace model production; returns the audit entry."""
    cwd = Path(cwd)
    validation, md5 = passing_candidate(cwd)
    known = registry.versions(cwd)
    existing = registry.by_md5(md5, known)
    interrupted = registry.production(cwd / registry.PRODUCTION_FILE) or {}
    if existing:
        name, meta = existing.name, existing.meta
    elif interrupted.get("md5") == md5 and interrupted.get("version") == registry.next_version(known):
        name, meta = interrupted["version"], interrupted  # finish an interrupted promotion as it began
    else:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        name = registry.next_version(known)
        model_meta = sio.read_json(cwd / META_FILE, {}) or {}
        meta = {
            "version": name, "alias": registry.alias_for(now), "promoted_at": now.isoformat(),
            "metric_name": validation["metric_name"], "metric": validation["metric"],
            "threshold": validation.get("threshold"), "md5": md5,
            **{k: model_meta.get(k) for k in META_KEYS},
        }
    remote = _remote(cwd)
    if remote:
        vcs.dvc("push", "--quiet", cwd=cwd)
    sio.write_json(cwd / registry.PRODUCTION_FILE, meta)
    prod_dep = vcs.hashes(vcs.read_lock(cwd / vcs.LOCK_FILE).get("validate", {}), "deps")
    if prod_dep.get(str(registry.PRODUCTION_FILE)) != sio.md5_file(cwd / registry.PRODUCTION_FILE):
        vcs.dvc("commit", "--force", "--quiet", "validate", cwd=cwd)
    paths = _commit_paths(cwd)
    vcs.git("add", "--", *paths, cwd=cwd)
    if vcs.git("diff", "--cached", "--name-only", "--", *paths, cwd=cwd).strip():
        message = (f"Promote model {name} to production: {meta['metric_name']} {meta['metric']:.3f} "
                   f"(threshold {validation.get('threshold')})\n\n{reason}")
        vcs.git("commit", "--quiet", "-m", message, "--", *paths, cwd=cwd)
    version = existing or registry.register(name, vcs.head(cwd), meta, cwd)
    registry.assign_production(version, reason, cwd)
    reloaded = reload_service(service_url, md5)
    entry = audit.append(
        cwd / audit.HEAL_LOG, "promote", reason, True, version=name, alias=meta.get("alias"), md5=md5,
        metric_name=meta["metric_name"], metric=meta["metric"], commit=version.commit,
        pushed_to=remote, service_reloaded=reloaded,
    )
    print(f"✅ Promoted {name} ({meta.get('alias')}) to production: {meta['metric_name']} {meta['metric']:.3f}, "
          f"md5 {md5}" + (f", pushed to DVC remote '{remote}'" if remote else ", no DVC remote configured"))
    return entry


def gate(*, service_url: str | None = None, cwd: str | Path = ".") -> dict | None:
    """Act on the latest validation: promote a passing model that is not production yet, roll back a failing one."""
    cwd = Path(cwd)
    validation = sio.read_json(cwd / VALIDATION_FILE)
    if validation is None:
        raise SelfHealError(f"{VALIDATION_FILE}: not found; run `dvc repro` first")
    if not validation.get("passed"):
        return rollback(service_url=service_url, cwd=cwd)
    prod = registry.production(cwd / registry.PRODUCTION_FILE)
    known = registry.versions(cwd)
    if prod and prod.get("md5") == validation.get("model_md5") and registry.by_md5(prod.get("md5"), known):
        print(f"Model {prod['version']} is already production")
        return None
    return promote(service_url=service_url, cwd=cwd)
