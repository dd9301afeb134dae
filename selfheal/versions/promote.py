"""Promote the validated model: push its bytes, record production, commit, tag the version.

Every step is idempotent and ordered so that an interrupted promotion is finished by simply running it again:
push (nothing visible changes) -> models/production.json -> `dvc commit validate` (production.json is a dep of
validate) -> a git commit of exactly the pipeline's state -> the version tag and the production assignment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import registry, vcs
from selfheal.versions.checkout import Reload

META_KEYS = ["task", "target", "model", "params", "data_md5", "n_train", "n_holdout"]


def passing_candidate(cwd: Path) -> tuple[dict[str, Any], str]:
    """(validation, model md5) when the workspace model passed validation and dvc.lock pins it; else an error."""
    validation = atomic.read_json(cwd / workspace.VALIDATION)
    if validation is None:
        raise SelfHealError(f"{workspace.VALIDATION}: not found; run `dvc repro` first")
    if not (cwd / workspace.MODEL).exists():
        raise SelfHealError(f"{workspace.MODEL}: missing; run `dvc repro` first")
    md5 = atomic.md5_file(cwd / workspace.MODEL)
    if validation.get("model_md5") != md5:
        raise SelfHealError(f"{workspace.VALIDATION} describes model {validation.get('model_md5')}, but {workspace.MODEL} "
                            f"is {md5}; run `dvc repro` so the model is validated")
    if not validation.get("passed"):
        raise SelfHealError(f"{workspace.MODEL} failed validation ({'; '.join(validation.get('reasons', []))}); "
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
    paths = [str(workspace.DVC_LOCK), str(workspace.PARAMS), str(workspace.PRODUCTION), *sorted(in_git)]
    paths += [f"{data.raw}.dvc", f"{data.current}.dvc"]
    paths += sorted({str(Path(p).parent / ".gitignore") for p in cached})
    return [p for p in dict.fromkeys(paths) if (cwd / p).exists()]


def promote(*, reason: str = "passed validation", reload: Reload | None = None, cwd: str | Path = ".") -> dict:
    """Make the validated workspace model production; returns the audit entry."""
    cwd = Path(cwd)
    validation, md5 = passing_candidate(cwd)
    known = registry.versions(cwd)
    existing = registry.by_md5(md5, known)
    interrupted = workspace.read_production(cwd / workspace.PRODUCTION) or {}
    if existing:
        name, meta = existing.name, existing.meta
    elif interrupted.get("md5") == md5 and interrupted.get("version") == registry.next_version(known):
        name, meta = interrupted["version"], interrupted  # finish an interrupted promotion as it began
    else:
        now = datetime.now(UTC).replace(microsecond=0)
        name = registry.next_version(known)
        model_meta = atomic.read_json(cwd / workspace.MODEL_META, {}) or {}
        meta = {
            "version": name, "alias": registry.alias_for(now), "promoted_at": now.isoformat(),
            "metric_name": validation["metric_name"], "metric": validation["metric"],
            "threshold": validation.get("threshold"), "md5": md5,
            **{k: model_meta.get(k) for k in META_KEYS},
        }
    remote = vcs.default_remote(cwd)
    if remote:
        vcs.dvc("push", "--quiet", cwd=cwd)
    atomic.write_json(cwd / workspace.PRODUCTION, meta)
    prod_dep = vcs.hashes(vcs.read_lock(cwd / workspace.DVC_LOCK).get("validate", {}), "deps")
    if prod_dep.get(str(workspace.PRODUCTION)) != atomic.md5_file(cwd / workspace.PRODUCTION):
        vcs.dvc("commit", "--force", "--quiet", "validate", cwd=cwd)
    paths = _commit_paths(cwd)
    vcs.git("add", "--", *paths, cwd=cwd)
    if vcs.git("diff", "--cached", "--name-only", "--", *paths, cwd=cwd).strip():
        message = (f"Promote model {name} to production: {meta['metric_name']} {meta['metric']:.3f} "
                   f"(threshold {validation.get('threshold')})\n\n{reason}")
        vcs.git("commit", "--quiet", "-m", message, "--", *paths, cwd=cwd)
    commit = vcs.head(cwd)
    if commit is None:
        raise SelfHealError("the repository has no commit to tag; commit the project first")
    version = existing or registry.register(name, commit, meta, cwd)
    registry.assign_production(version, reason, cwd)
    reloaded = reload(md5) if reload else False
    entry = audit.append(
        cwd / workspace.HEAL_LOG, "promote", reason, True, version=name, alias=meta.get("alias"), md5=md5,
        metric_name=meta["metric_name"], metric=meta["metric"], commit=version.commit,
        pushed_to=remote, service_reloaded=reloaded,
    )
    print(f"✅ Promoted {name} ({meta.get('alias')}) to production: {meta['metric_name']} {meta['metric']:.3f}, "
          f"md5 {md5}" + (f", pushed to DVC remote '{remote}'" if remote else ", no DVC remote configured"))
    return entry

