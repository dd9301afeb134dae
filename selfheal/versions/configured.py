"""Versions of a configured project's model (selfheal.yaml): identify, judge, promote and roll back.

A version is the dvc.lock entries of the configured stages at a GTO-tagged commit; its identity is the md5 of
its model output (a `.dir` hash for a directory), or of all model outputs together when there are several, so
versions registered by GTO itself (no metadata in the tag) are recognised too. The gate reads the configured
metrics file and dotted key - from the workspace for a candidate, and for production from git or from the DVC
cache (a metrics JSON inside a cached `eval/` directory), verified like every restored byte.
"""

from __future__ import annotations

import configparser
import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfheal.core import audit, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, dig, parse_metrics
from selfheal.versions import registry, vcs
from selfheal.versions.checkout import Reload, fetch_revision, from_revision, read_output, restore_stages
from selfheal.versions.registry import Version
from selfheal.versions.rollback import NothingToRestore


def model_hashes(lock: dict[str, Any], project: Project) -> dict[str, str]:
    """{out: md5} of the model's outputs as `lock` records them (missing outputs are left out)."""
    found: dict[str, str] = {}
    for stage in project.model.stages:
        found.update(vcs.hashes(lock.get(stage) or {}))
    return {out: found[out] for out in project.model.outs if found.get(out)}


def identity(hashes: dict[str, str]) -> str | None:
    """One model output: its md5; several: the md5 of their sorted path:md5 lines."""
    if not hashes:
        return None
    if len(hashes) == 1:
        return next(iter(hashes.values()))
    return hashlib.md5("\n".join(f"{p}:{m}" for p, m in sorted(hashes.items())).encode()).hexdigest()


class Registry:
    """The configured artifact's versions and production assignments, read once."""

    def __init__(self, project: Project, cwd: Path) -> None:
        self.project, self.cwd = project, cwd
        self.known = registry.versions(cwd, project.model.artifact)
        self.history = registry.assignments(cwd, project.model.artifact, project.gate.stage)
        self._locks: dict[str, dict[str, Any]] = {}

    def lock(self, v: Version) -> dict[str, Any]:
        if v.commit not in self._locks:
            self._locks[v.commit] = vcs.parse_lock(vcs.show(v.commit, workspace.DVC_LOCK, self.cwd))
        return self._locks[v.commit]

    def identity(self, v: Version) -> str | None:
        return v.md5 or identity(model_hashes(self.lock(v), self.project))

    def production(self) -> Version | None:
        """The version of the latest assignment of the production stage (GTO's meaning of `stage`)."""
        by_name = {v.name: v for v in self.known}
        return by_name.get(self.history[-1].version) if self.history else None

    def by_identity(self, ident: str | None) -> Version | None:
        return next((v for v in reversed(self.known) if ident and self.identity(v) == ident), None)

    def metric(self, v: Version) -> float | None:
        """The gate metric of a registered version: from its tag when selfheal registered it, else its files."""
        gate = self.project.gate
        if v.meta.get("metric_name") == gate.key and isinstance(v.meta.get("metric"), (int, float)):
            return float(v.meta["metric"])
        data = read_output(self.lock(v), gate.metrics, from_revision(v.commit, self.cwd), self.cwd,
                           fetch=lambda: fetch_revision(v.commit, self.cwd)) or vcs.show(v.commit, gate.metrics, self.cwd)
        if data is None:
            return None
        return dig(parse_metrics(data, f"{v.tag}:{gate.metrics}"), gate.key, f"{v.tag}:{gate.metrics}")

    def target(self, bad: str | None) -> Version | None:
        """Production unless it is the bad model, else the latest earlier production version that is not."""
        by_name = {v.name: v for v in self.known}
        for name in [a.version for a in reversed(self.history)]:
            v = by_name.get(name)
            if v and self.identity(v) != bad:
                return v
        return None


def workspace_metric(project: Project, cwd: Path) -> float:
    path = cwd / project.gate.metrics
    if not path.is_file():
        raise SelfHealError(f"{project.gate.metrics}: not found; run `dvc repro` so the candidate is evaluated")
    return dig(parse_metrics(path.read_bytes(), project.gate.metrics), project.gate.key, project.gate.metrics)


def judge(metric: float, production: float | None, project: Project) -> list[str]:
    """Why a candidate fails the gate (empty: it passes): the absolute bound, then the change versus production."""
    gate, reasons = project.gate, []
    worse = (lambda a, b: a < b) if gate.direction == "max" else (lambda a, b: a > b)
    if gate.bound is not None and worse(metric, gate.bound):
        word = "below" if gate.direction == "max" else "above"
        reasons.append(f"{gate.key} {metric:.4f} {word} bound {gate.bound:g}")
    if production is not None and production != 0:
        change = (production - metric if gate.direction == "max" else metric - production) / abs(production)
        if change > gate.max_relative_change:
            reasons.append(f"{gate.key} {metric:.4f} is {change:.1%} worse than production {production:.4f} "
                           f"(max {gate.max_relative_change:.0%})")
    return reasons


def candidate(project: Project, cwd: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(dvc.lock, model hashes) of the workspace; an error when the configured stages have not run."""
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    missing = [s for s in project.model.stages if s not in lock]
    if missing:
        raise SelfHealError(f"dvc.lock has no stage(s) {missing}; run `dvc repro` first")
    hashes = model_hashes(lock, project)
    absent = [o for o in project.model.outs if o not in hashes]
    if absent:
        raise SelfHealError(f"dvc.lock records no output {absent} in stages {project.model.stages}; "
                            "check model.outs in selfheal.yaml")
    return lock, hashes


def _remote(cwd: Path) -> str | None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read([cwd / ".dvc/config", cwd / ".dvc/config.local"])
    return parser.get("core", "remote", fallback=None)


def _commit_paths(lock: dict[str, Any], cwd: Path) -> list[str]:
    """A version's commit: dvc.lock, the params files the lock names, git-kept outputs, DVC's .gitignores."""
    not_cached = {p for paths in vcs.git_tracked_outputs(cwd / workspace.DVC_YAML).values() for p in paths}
    cached = {p for entry in lock.values() for p in vcs.hashes(entry)} - not_cached
    params = {f for entry in lock.values() for f in (entry.get("params") or {})}
    paths = [str(workspace.DVC_LOCK), *sorted(params), *sorted(not_cached)]
    paths += sorted({str(Path(p).parent / ".gitignore") for p in cached})
    return [p for p in dict.fromkeys(paths) if (cwd / p).exists()]


def promote(project: Project, *, reason: str, reload: Reload | None = None, cwd: Path = Path(".")) -> dict[str, Any]:
    """Register the workspace candidate (commit + GTO version tag) and assign it the production stage."""
    lock, hashes = candidate(project, cwd)
    reg = Registry(project, cwd)
    ident = identity(hashes)
    metric = workspace_metric(project, cwd)
    existing = reg.by_identity(ident)
    remote = _remote(cwd)
    if remote:
        vcs.dvc("push", "--quiet", *project.model.stages, cwd=cwd)
    if existing is None:
        paths = _commit_paths(lock, cwd)
        vcs.git("add", "--", *paths, cwd=cwd)
        if vcs.git("diff", "--cached", "--name-only", "--", *paths, cwd=cwd).strip():
            vcs.git("commit", "--quiet", "-m", f"{project.model.artifact}: candidate {project.gate.key} {metric:.4f}"
                    f"\n\n{reason}", "--", *paths, cwd=cwd)
        commit = vcs.head(cwd)
        if commit is None:
            raise SelfHealError("the repository has no commit to tag; commit the project first")
        meta = {"md5": ident, "outs": hashes, "metric_name": project.gate.key, "metric": metric,
                "promoted_at": datetime.now(UTC).replace(microsecond=0).isoformat()}
        registered = registry.register(registry.next_version(reg.known), commit, meta, cwd,
                                       artifact=project.model.artifact)
        if registered is None:  # register returns None only for a number lost on a remote, which is not used here
            raise SelfHealError(f"{project.model.artifact}: could not register a version")
        existing = registered
    registry.assign_production(existing, reason, cwd, stage=project.gate.stage)
    reloaded = reload(ident) if reload else False
    entry = audit.append(cwd / project.record(workspace.HEAL_LOG), "promote", reason, True, version=existing.name,
                         tag=existing.tag, md5=ident, metric_name=project.gate.key, metric=metric,
                         commit=existing.commit, pushed_to=remote, service_reloaded=reloaded)
    print(f"✅ Promoted {existing.tag} to {project.gate.stage}: {project.gate.key} {metric:.4f}")
    return entry


def rollback(project: Project, *, version: str | None = None, reason: str | None = None,
             reload: Reload | None = None, cwd: Path = Path(".")) -> dict[str, Any]:
    """Restore production's (or `version`'s) stages, md5-verified, and assign it the production stage."""
    started = time.perf_counter()
    reg = Registry(project, cwd)
    lock = vcs.read_lock(cwd / workspace.DVC_LOCK)
    bad = identity(model_hashes(lock, project))
    log = cwd / project.record(workspace.ROLLBACK_LOG)
    target: Version | None
    if version is not None:  # named by a person, or by heal restoring production's own bytes (with a reason)
        action = "manual_rollback" if reason is None else "auto_rollback"
        target = registry.find(version, reg.known)
        reason = reason or f"Manual rollback to {target.tag} requested"
    else:
        action, target = "auto_rollback", reg.target(bad)
        reason = reason or "candidate failed the gate"
    if target is None:
        audit.append(log, action, reason, False, version_restored=None, failed_md5=bad,
                     message="no earlier good version")
        raise NothingToRestore(f"no {project.gate.stage} version of {project.model.artifact} to roll back to; "
                               "nothing was changed")
    print(f"🔄 Rolling back {project.model.artifact} to {target.name}: {reason}")
    restored = restore_stages(reg.lock(target), project.model.stages, from_revision(target.commit, cwd), cwd,
                              fetch=lambda: fetch_revision(target.commit, cwd))
    expected = model_hashes(reg.lock(target), project)
    if any(restored.get(out) != md5 for out, md5 in expected.items()):
        raise SelfHealError(f"{target.tag}: restored outputs do not match its dvc.lock")
    assigned = registry.assign_production(target, reason, cwd, stage=project.gate.stage)
    ident = reg.identity(target)
    reloaded = reload(ident) if reload else False
    entry = audit.append(log, action, reason, True, version_restored=target.name, tag=target.tag,
                         restored_md5=ident, failed_md5=bad, assigned=assigned, service_reloaded=reloaded,
                         restored=sorted({p for s in project.model.stages for p in vcs.hashes(reg.lock(target)[s])}),
                         duration_s=round(time.perf_counter() - started, 3))
    print(f"✅ Rolled back: {', '.join(entry['restored'])} are {target.tag}'s (md5-verified)")
    return entry


def rows(project: Project, cwd: Path = Path(".")) -> list[dict[str, Any]]:
    """`selfheal versions` for a configured project: every version, its metric, identity and production mark."""
    reg = Registry(project, cwd)
    prod = reg.production()
    return [{"version": v.name, "tag": v.tag, "created_at": v.meta.get("promoted_at") or v.created_at,
             "metric_name": project.gate.key, "metric": reg.metric(v), "md5": reg.identity(v),
             "production": prod is not None and v.name == prod.name} for v in reg.known]
