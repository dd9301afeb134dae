"""Promote the validated model: judge it against production, push its bytes, commit, tag the version.

Every step is idempotent and ordered so that an interrupted promotion is finished by simply running it again:
push (nothing visible changes) -> a git commit of exactly the pipeline's state -> the version tag and the
production assignment (the registry: nothing else records production).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, journal, workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import gate, registry, vcs
from selfheal.versions.checkout import Reload

META_KEYS = ["task", "target", "model", "params", "data_md5", "n_train", "n_holdout"]


def candidate_verdict(cwd: Path, production: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validate stage's verdict on the workspace candidate, judged by the gate against `production` (the
    registry's record, see registry.production_record); None before the pipeline validated a model."""
    from selfheal.core.config import load_params

    validation = atomic.read_json(cwd / workspace.VALIDATION)
    if not isinstance(validation, dict):
        return None
    meta = atomic.read_json(cwd / workspace.MODEL_META, {}) or {}
    features = meta.get("features") if meta.get("md5") == validation.get("model_md5") else None
    drop = load_params(cwd / workspace.PARAMS).model_validation.max_relative_drop
    return gate.judge(validation, production, drop, features if isinstance(features, list) else None)


def passing_candidate(cwd: Path, production: dict[str, Any] | None, accept_schema_change: bool = False
                      ) -> tuple[dict[str, Any], str]:
    """(verdict, model md5) when the workspace model passed validation and the gate against `production`, and
    dvc.lock pins it; else an error. `accept_schema_change`: a person's decision to promote a model that failed
    only because its input columns differ from production's (its clients will need the new schema)."""
    validation = candidate_verdict(cwd, production)
    if validation is None:
        raise SelfHealError(f"{workspace.VALIDATION}: not found; run `dvc repro` first")
    if not (cwd / workspace.MODEL).exists():
        raise SelfHealError(f"{workspace.MODEL}: missing; run `dvc repro` first")
    md5 = atomic.md5_file(cwd / workspace.MODEL)
    if validation.get("model_md5") != md5:
        raise SelfHealError(f"{workspace.VALIDATION} describes model {validation.get('model_md5')}, but {workspace.MODEL} "
                            f"is {md5}; run `dvc repro` so the model is validated")
    changes = validation.get("schema_changes") or []
    if not validation.get("passed") and changes and validation.get("passed_except_schema"):
        if not accept_schema_change:
            raise SelfHealError(f"{workspace.MODEL} passed validation, but its input schema differs from production "
                                f"{validation.get('production_version')}: {'; '.join(changes)}; clients of the service "
                                "would need the new schema: `selfheal promote --accept-schema-change` promotes it")
    elif not validation.get("passed"):
        raise SelfHealError(f"{workspace.MODEL} failed the gate ({'; '.join(validation.get('failures', []))}); "
                            "only a model that passed can be promoted")
    pinned = vcs.hashes(vcs.read_lock(cwd / workspace.DVC_LOCK).get("train", {})).get(str(workspace.MODEL))
    if pinned != md5:
        raise SelfHealError(f"dvc.lock does not pin {workspace.MODEL} (md5 {md5}); run `dvc repro` first")
    return validation, md5


def _commit_paths(cwd: Path) -> list[str]:
    """What a version's commit holds: dvc.lock, params, production record, records, metrics and plots, DVC's
    .gitignores, and the .dvc files of the input data (the data it was trained on, as `dvc repro` versioned it)."""
    from selfheal.core.config import load_params

    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    dvc_yaml = cwd / workspace.DVC_YAML
    in_git = {p for paths in vcs.git_tracked_outputs(dvc_yaml).values() for p in paths}
    cached = {p for entry in lock.values() for p in vcs.hashes(entry)} - in_git
    data = load_params(cwd / workspace.PARAMS).data
    paths = [str(workspace.DVC_LOCK), str(workspace.PARAMS), *sorted(in_git)]
    paths += [f"{data.raw}.dvc", f"{data.current}.dvc"]
    paths += sorted({str(Path(p).parent / ".gitignore") for p in cached})
    return [p for p in dict.fromkeys(paths) if (cwd / p).exists()]


def _meta(cwd: Path, validation: dict[str, Any], md5: str, known: list[registry.Version]) -> dict[str, Any]:
    """The version's metadata: the registered one for these bytes, or new."""
    existing = registry.by_md5(md5, known)
    if existing:
        return existing.meta
    now = datetime.now(UTC).replace(microsecond=0)
    model_meta = atomic.read_json(cwd / workspace.MODEL_META, {}) or {}
    return {
        "version": registry.next_version(known), "alias": registry.alias_for(now), "promoted_at": now.isoformat(),
        "metric_name": validation["metric_name"], "metric": validation["metric"],
        "threshold": validation.get("threshold"), "md5": md5, **{k: model_meta.get(k) for k in META_KEYS},
        "features": gate.input_schema(model_meta.get("features") or []), "host": socket.gethostname(),
    }


def _commit(cwd: Path, meta: dict[str, Any], validation: dict[str, Any], reason: str) -> str:
    """A git commit of the pipeline's state (nothing when it is already committed); returns HEAD."""
    paths = _commit_paths(cwd)
    vcs.git("add", "--", *paths, cwd=cwd)
    if vcs.git("diff", "--cached", "--name-only", "--", *paths, cwd=cwd).strip():
        message = (f"Promote model {meta['version']} to production: {meta['metric_name']} {meta['metric']:.3f} "
                   f"(threshold {validation.get('threshold')})\n\n{reason}")
        vcs.git("commit", "--quiet", "-m", message, "--", *paths, cwd=cwd)
    commit = vcs.head(cwd)
    if commit is None:
        raise SelfHealError("the repository has no commit to tag; commit the project first")
    return commit


def promote(*, reason: str = "passed validation", reload: Reload | None = None, cwd: str | Path = ".",
            accept_schema_change: bool = False) -> dict:
    """Make the validated workspace model production; returns the audit entry.

    The gate judges the candidate against the registry's production, read after fetching the shared registry
    when one is configured (registry.shared_remote). There the version number and the production assignment
    are claimed: a runner that loses a claim reads the registry again and judges again against whatever
    production is now, so two runners never lower production by more than the gate allows.
    """
    cwd = Path(cwd)
    shared = registry.shared_remote(cwd)
    if shared:
        registry.sync(shared, cwd)
    validation, md5 = passing_candidate(cwd, registry.production_record(cwd), accept_schema_change)
    with journal.intent("promote", cwd / workspace.HEAL_LOG, reason, md5=md5):
        return _promote(cwd, validation, md5, reason, reload, shared, accept_schema_change)


def _promote(cwd: Path, validation: dict[str, Any], md5: str, reason: str, reload: Reload | None,
             shared: str | None, accept_schema_change: bool) -> dict:
    def judge(production: registry.Version | None) -> dict[str, Any]:
        """The verdict against `production`, raising when the candidate no longer passes (production moved)."""
        return passing_candidate(cwd, registry.record(production, cwd) if production else None,
                                 accept_schema_change)[0]

    remote = vcs.default_remote(cwd)
    if remote:
        vcs.dvc("push", "--quiet", cwd=cwd)
    for _ in range(registry.CLAIM_TRIES):
        known = registry.versions(cwd)
        existing = registry.by_md5(md5, known)
        meta = _meta(cwd, validation, md5, known)
        before = vcs.head(cwd)
        commit = _commit(cwd, meta, validation, reason)
        version = existing or registry.register(meta["version"], commit, meta, cwd, shared)
        if version is not None:
            break
        print(f"{registry.ARTIFACT}@{meta['version']} was just registered by another runner; taking the next number")
        if before and commit != before:
            vcs.git("reset", "--quiet", "--soft", before, cwd=cwd)  # the next try commits the next number
        validation = judge(registry.production(cwd))
    else:
        raise SelfHealError(f"could not claim a version number on git remote {shared!r} "
                            f"in {registry.CLAIM_TRIES} tries")
    if existing and existing.meta.get("host") not in (None, socket.gethostname()):
        print(f"{existing.tag} already holds these model bytes (registered on {existing.meta['host']}): standing down")
    registry.assign_production(version, reason, cwd, shared, judge=judge)
    reloaded = reload(md5) if reload else False  # the service first: MLflow's alias is bookkeeping
    mlflow_version = registry.mlflow_alias(version, cwd)
    accepted = [] if validation.get("passed") else validation["schema_changes"]
    entry = audit.append(
        cwd / workspace.HEAL_LOG, "promote", reason, True, version=version.name, alias=meta.get("alias"), md5=md5,
        metric_name=meta["metric_name"], metric=meta["metric"], commit=version.commit,
        production_before=validation.get("production_version"), relative_drop=validation.get("relative_drop"),
        pushed_to=remote, registry_remote=shared, service_reloaded=reloaded, mlflow_version=mlflow_version,
        **({"accepted_schema_change": accepted} if accepted else {}),
    )
    print(f"✅ Promoted {version.name} ({meta.get('alias')}) to production: {meta['metric_name']} "
          f"{meta['metric']:.3f}, md5 {md5}"
          + (f", pushed to DVC remote '{remote}'" if remote else ", no DVC remote configured"))
    return entry
