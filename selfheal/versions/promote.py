"""Promote the workspace candidate: judge it against production, push its bytes, commit, tag the version.

One body for every project kind. Every step is idempotent and ordered so that an interrupted promotion is
finished by simply running it again: push (nothing visible changes) -> a git commit of exactly what reproduces
the version -> the version tag and the production assignment (the registry: nothing else records production).
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfheal.core import audit, journal, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, current
from selfheal.versions import checkout, gate, registry, vcs
from selfheal.versions.catalog import Versions, candidate, identity
from selfheal.versions.checkout import Reload

# what a model's metadata file (model.json beside model.joblib) says about it, kept in its version tag
META_KEYS = ["task", "target", "model", "params", "data_md5", "n_train", "n_holdout"]


def passing_candidate(project: Project, cwd: Path, versions: Versions, production: registry.Version | None,
                      accept_schema_change: bool = False, force: bool = False
                      ) -> tuple[dict[str, Any], str, dict[str, str]]:
    """(verdict, identity, model hashes) when the workspace candidate is what dvc.lock pins and passes the gate
    against `production`; else an error saying what to do. `accept_schema_change`: a person's decision to promote
    a model that failed only because its input columns differ from production's; `force`: a person's decision
    to promote it whatever the gate says (the verdict is returned, and recorded by the caller)."""
    hashes = candidate(project, vcs.read_lock(cwd / workspace.DVC_LOCK))
    ident = identity(hashes)
    altered = [out for out, md5 in hashes.items() if checkout.differs(out, md5, cwd)]
    if altered:
        raise SelfHealError(f"{', '.join(altered)}: not the bytes dvc.lock pins; run `dvc repro` first")
    verdict = gate.verdict(project, cwd, versions, production)
    if verdict is None:
        raise SelfHealError(f"{project.gate.metrics}: not found; run `dvc repro` first")
    if verdict.get("model_md5") not in (None, ident):
        raise SelfHealError(f"{project.gate.metrics} describes model {verdict['model_md5']}, but dvc.lock pins "
                            f"{ident}; run `dvc repro` so the model is validated")
    changes = verdict.get("schema_changes") or []
    if force:
        return verdict, str(ident), hashes
    if not verdict.get("passed") and changes and verdict.get("passed_except_schema"):
        if not accept_schema_change:
            raise SelfHealError(f"the candidate passed validation, but its input schema differs from production "
                                f"{verdict.get('production_version')}: {'; '.join(changes)}; clients of the service "
                                "would need the new schema: `selfheal promote --accept-schema-change` promotes it")
    elif not verdict.get("passed"):
        raise SelfHealError(f"the candidate failed the gate ({'; '.join(verdict.get('failures') or [])}); "
                            "only a candidate that passed can be promoted (`selfheal promote --force` overrides "
                            "the gate, and the heal log records who did)")
    return verdict, str(ident), hashes


def _who() -> str:
    """Who overrode the gate: the identity git commits as here (else the login name), and the host."""
    import getpass

    name = vcs.git("var", "GIT_AUTHOR_IDENT", check=False).split(" <")[0].strip() or getpass.getuser()
    return f"{name}@{socket.gethostname()}"


def _commit_paths(cwd: Path) -> list[str]:
    """What a version's commit holds, so that checking out its tag reproduces it: dvc.lock, the params files it
    names, the outputs git keeps (metrics, records, plots), DVC's .gitignores, and the `.dvc` files of the data
    the stages read (as `dvc repro` versioned it), with the deletion of any `.dvc` file a person removed
    (`dvc remove`: data the version no longer reads)."""
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    in_git = {p for paths in vcs.git_tracked_outputs(cwd / workspace.DVC_YAML).values() for p in paths}
    cached = {p for entry in lock.values() for p in vcs.hashes(entry)} - in_git
    params = {f for entry in lock.values() for f in (entry.get("params") or {})}
    added = {dep for entry in lock.values() for dep in vcs.hashes(entry, "deps") if (cwd / f"{dep}.dvc").is_file()}
    paths = [str(workspace.DVC_LOCK), *sorted(params), *sorted(in_git), *sorted(f"{dep}.dvc" for dep in added)]
    # DVC's .gitignore beside each cached output and each `dvc add`ed input (not beside code or other deps)
    paths += sorted({str(Path(p).parent / ".gitignore") for p in cached | added})
    removed = vcs.git("ls-files", "--deleted", "--", "*.dvc", cwd=cwd).split()
    return [p for p in dict.fromkeys(paths) if (cwd / p).exists()] + removed


def _model_card(project: Project, cwd: Path) -> dict[str, Any]:
    """What the model's metadata file beside it says (our pipeline's model.json: task, params, input schema)."""
    path = cwd / Path(project.model.outs[0]).with_suffix(".json")
    try:
        card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError:
        return {}
    if not isinstance(card, dict) or not isinstance(card.get("features"), list):
        return {}
    return {**{k: card.get(k) for k in META_KEYS}, "features": gate.input_schema(card["features"])}


def _meta(project: Project, cwd: Path, verdict: dict[str, Any], ident: str, hashes: dict[str, str],
          versions: Versions, trained_on: dict[str, str] | None) -> dict[str, Any]:
    """The version's metadata: the registered one for these bytes, or new."""
    existing = versions.by_identity(ident)
    if existing:
        return existing.meta
    now = datetime.now(UTC).replace(microsecond=0)
    return {
        "version": registry.next_version(versions.known), "alias": registry.alias_for(now),
        "promoted_at": now.isoformat(), "metric_name": verdict["metric_name"], "metric": verdict["metric"],
        "gate_key": project.gate.key, "threshold": verdict.get("threshold"), "md5": ident,
        **({"outs": hashes} if len(hashes) > 1 else {}), **_model_card(project, cwd), "host": socket.gethostname(),
        **({"trained_on": trained_on} if trained_on else {}),
    }


def _commit(cwd: Path, meta: dict[str, Any], artifact: str, reason: str) -> str:
    """A git commit of the version's state (nothing when it is already committed); returns HEAD."""
    paths = _commit_paths(cwd)
    vcs.git("add", "--", *paths, cwd=cwd)
    if vcs.git("diff", "--cached", "--name-only", "--", *paths, cwd=cwd).strip():
        message = (f"Promote {artifact} {meta['version']} to production: {meta['metric_name']} {meta['metric']:.3f} "
                   f"(threshold {meta.get('threshold')})\n\n{reason}")
        vcs.git("commit", "--quiet", "-m", message, "--", *paths, cwd=cwd)
    commit = vcs.head(cwd)
    if commit is None:
        raise SelfHealError("the repository has no commit to tag; commit the project first")
    return commit


def promote(project: Project | None = None, *, reason: str = "passed the gate", reload: Reload | None = None,
            cwd: str | Path = ".", accept_schema_change: bool = False, force: bool = False,
            by_person: bool = False, trained_on: dict[str, str] | None = None) -> dict:
    """Make the workspace candidate production; returns the audit entry.

    `by_person`: `selfheal promote` (not heal), which also promotes a model a person rolled back from.
    `trained_on`: a retrain's batch ({path: md5}), kept in the version's record so that every clone knows the
    batch was trained on.
    The gate judges it against the registry's production, read after fetching the shared registry when one is
    configured (registry.shared_remote). There the version number and the production assignment are claimed: a
    runner that loses a claim reads the registry again and judges again against whatever production is now, so
    two runners never lower production by more than the gate allows.
    """
    cwd = Path(cwd)
    project = project or current(cwd)
    shared = registry.shared_remote(cwd)
    if shared:
        registry.sync(shared, cwd, project.model.artifact)
    versions = Versions(project, cwd)
    verdict, ident, hashes = passing_candidate(project, cwd, versions, versions.production(), accept_schema_change,
                                               force)
    overridden = [] if verdict.get("passed") or not force else list(verdict.get("failures") or [])
    if overridden:
        print(f"⚠️  --force: promoting past the gate: {'; '.join(overridden)}")
    with journal.intent("promote", cwd / project.record(workspace.HEAL_LOG), reason, md5=ident):
        entry = _promote(project, cwd, verdict, ident, hashes, reason, reload, shared, accept_schema_change,
                         overridden, trained_on)
    if by_person:  # a person promoting a model they rolled back from lifts their hold on it
        from selfheal.versions.rollback import release

        release(project, ident, cwd)
    return entry


def _promote(project: Project, cwd: Path, verdict: dict[str, Any], ident: str, hashes: dict[str, str], reason: str,
             reload: Reload | None, shared: str | None, accept_schema_change: bool, overridden: list[str],
             trained_on: dict[str, str] | None) -> dict:
    def judge(production: registry.Version | None) -> dict[str, Any]:
        """The verdict against `production`, raising when the candidate no longer passes (production moved)."""
        return passing_candidate(project, cwd, Versions(project, cwd), production, accept_schema_change,
                                 bool(overridden))[0]

    artifact = project.model.artifact
    remote = vcs.default_remote(cwd)
    if remote:
        vcs.dvc("push", "--quiet", cwd=cwd)  # every output dvc.lock names, the data included
    for _ in range(registry.CLAIM_TRIES):
        versions = Versions(project, cwd)
        existing = versions.by_identity(ident)
        meta = _meta(project, cwd, verdict, ident, hashes, versions, trained_on)
        before = vcs.head(cwd)
        commit = _commit(cwd, meta, artifact, reason)
        version = existing or registry.register(meta["version"], commit, meta, cwd, shared, artifact=artifact)
        if version is not None:
            break
        print(f"{artifact}@{meta['version']} was just registered by another runner; taking the next number")
        if before and commit != before:
            vcs.git("reset", "--quiet", "--soft", before, cwd=cwd)  # the next try commits the next number
        verdict = judge(Versions(project, cwd).production())
    else:
        raise SelfHealError(f"could not claim a version number on git remote {shared!r} "
                            f"in {registry.CLAIM_TRIES} tries")
    if existing and existing.meta.get("host") not in (None, socket.gethostname()):
        print(f"{existing.tag} already holds these model bytes (registered on {existing.meta['host']}): standing down")
    registry.assign_production(version, reason, cwd, shared, stage=project.gate.stage, judge=judge)
    reloaded = reload(ident) if reload else False  # the service first: MLflow's alias is bookkeeping
    mlflow_version = registry.mlflow_alias(version, ident, cwd)
    accepted = [] if verdict.get("passed") or overridden else verdict["schema_changes"]
    entry = audit.append(
        cwd / project.record(workspace.HEAL_LOG), "promote", reason, True, version=version.name, tag=version.tag,
        alias=meta.get("alias"), md5=ident, metric_name=verdict["metric_name"], metric=verdict["metric"],
        commit=version.commit, production_before=verdict.get("production_version"),
        relative_drop=verdict.get("relative_drop"), pushed_to=remote, registry_remote=shared,
        service_reloaded=reloaded, mlflow_version=mlflow_version,
        **({"accepted_schema_change": accepted} if accepted else {}),
        **({"forced_past_gate": overridden, "forced_by": _who()} if overridden else {}),
    )
    print(f"✅ Promoted {version.tag} to {project.gate.stage} ({meta.get('alias')}): {verdict['metric_name']} "
          f"{verdict['metric']:.3f}, md5 {ident}"
          + (f", pushed to DVC remote '{remote}'" if remote else ", no DVC remote configured"))
    return entry
