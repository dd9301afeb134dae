"""A project's model versions as the registry holds them, read once: identity, production, metric, record.

A version is the dvc.lock entries of the project's model stages at a GTO-tagged commit. Its identity is the md5
of its model output (a `.dir` hash for a directory), or of all model outputs together when there are several,
so versions registered by GTO itself (no metadata in the tag) are recognised too. Production is the version of
the latest `<artifact>#<stage>#N` assignment. The same for every project kind: our pipeline's selfheal.yaml
names its artifact, outputs and stages like any other project's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, dig, parse_metrics
from selfheal.versions import registry, vcs
from selfheal.versions.checkout import available, fetch_revision, from_revision, read_output
from selfheal.versions.registry import Version


def stage_outputs(lock: dict[str, Any], project: Project) -> dict[str, str]:
    """{out: md5} of every output of the project's model stages as `lock` records them."""
    found: dict[str, str] = {}
    for stage in project.model.stages:
        found.update(vcs.hashes(lock.get(stage) or {}))
    return found


def model_hashes(lock: dict[str, Any], project: Project) -> dict[str, str]:
    """{out: md5} of the model's outputs as `lock` records them (missing outputs are left out)."""
    found = stage_outputs(lock, project)
    return {out: found[out] for out in project.model.outs if found.get(out)}


def identity(hashes: dict[str, str]) -> str | None:
    """One model output: its md5; several: the md5 of their sorted path:md5 lines."""
    if not hashes:
        return None
    if len(hashes) == 1:
        return next(iter(hashes.values()))
    return hashlib.md5("\n".join(f"{p}:{m}" for p, m in sorted(hashes.items())).encode()).hexdigest()


def candidate(project: Project, lock: dict[str, Any]) -> dict[str, str]:
    """The model hashes the workspace's dvc.lock (`lock`) pins; an error when the model stages have not run."""
    missing = [s for s in project.model.stages if s not in lock]
    if missing:
        raise SelfHealError(f"dvc.lock has no stage(s) {missing}; run `dvc repro` first")
    hashes = model_hashes(lock, project)
    absent = [o for o in project.model.outs if o not in hashes]
    if absent:
        raise SelfHealError(f"dvc.lock records no output {absent} in stages {project.model.stages}; "
                            "check model.outs in selfheal.yaml")
    return hashes


class Versions:
    """The project's artifact: its registered versions and production assignments, read once."""

    def __init__(self, project: Project, cwd: str | Path = ".") -> None:
        self.project, self.cwd = project, Path(cwd)
        self.artifact, self.stage = project.model.artifact, project.gate.stage
        self.known = registry.versions(self.cwd, self.artifact)
        self.history = registry.assignments(self.cwd, self.artifact, self.stage, self.known)
        self._locks: dict[str, dict[str, Any]] = {}
        self._reachable: dict[str, bool] = {}

    def lock(self, v: Version) -> dict[str, Any]:
        if v.commit not in self._locks:
            self._locks[v.commit] = vcs.parse_lock(vcs.show(v.commit, workspace.DVC_LOCK, self.cwd),
                                                   vcs.stage_dirs(self.cwd / workspace.DVC_YAML))
        return self._locks[v.commit]

    def identity(self, v: Version) -> str | None:
        return v.md5 or identity(model_hashes(self.lock(v), self.project))

    def production(self) -> Version | None:
        """The version of the latest assignment of the production stage (GTO's meaning of `stage`)."""
        return registry.assigned(self.history, self.known)

    def by_identity(self, ident: str | None) -> Version | None:
        return next((v for v in reversed(self.known) if ident and self.identity(v) == ident), None)

    def find(self, ref: str) -> Version:
        return registry.find(ref, self.known)

    def reachable(self, v: Version) -> bool:
        """Whether its outputs can be restored (the DVC cache, git, or the remote): a version whose outputs were
        pushed to a remote this clone cannot read is listed, never restored."""
        if v.name not in self._reachable:
            self._reachable[v.name] = available(self.lock(v), self.project.model.stages,
                                                 from_revision(v.commit, self.cwd), self.cwd,
                                                 fetch=lambda: fetch_revision(v.commit, self.cwd))
        return self._reachable[v.name]

    def metric(self, v: Version) -> float | None:
        """The gate metric of a registered version: from its tag when selfheal registered it, else its files;
        None when neither has it (its outputs are not reachable)."""
        gate = self.project.gate
        if v.meta.get("gate_key", v.meta.get("metric_name")) == gate.key and isinstance(v.meta.get("metric"),
                                                                                       (int, float)):
            return float(v.meta["metric"])
        try:
            data = read_output(self.lock(v), gate.metrics, from_revision(v.commit, self.cwd), self.cwd,
                               fetch=lambda: fetch_revision(v.commit, self.cwd)) or vcs.show(v.commit, gate.metrics,
                                                                                             self.cwd)
        except SelfHealError:
            return None  # listed as "not reachable"; never a reason for heal or `versions` to fail
        if data is None:
            return None
        return dig(parse_metrics(data, f"{v.tag}:{gate.metrics}"), gate.key, f"{v.tag}:{gate.metrics}")

    def record(self, v: Version) -> dict[str, Any]:
        """What the registry knows of a version as one mapping: its tag's metadata, its name, its identity, and the
        md5 of the first model output's metadata file (`model.json` beside `model.joblib`) when its lock pins one."""
        meta_path = str(Path(self.project.model.outs[0]).with_suffix(".json"))
        return {**v.meta, "version": v.name, "tag": v.tag, "commit": v.commit, "md5": self.identity(v),
                "meta_md5": stage_outputs(self.lock(v), self.project).get(meta_path)}

    def production_record(self) -> dict[str, Any] | None:
        prod = self.production()
        return self.record(prod) if prod else None

    def rows(self) -> list[dict[str, Any]]:
        """`selfheal versions`: every version, its metric, identity and production mark."""
        prod = self.production()
        return [{"version": v.name, "tag": v.tag, "alias": v.alias,
                 "created_at": v.meta.get("promoted_at") or v.created_at,
                 "metric_name": v.meta.get("metric_name") or self.project.gate.key, "metric": self.metric(v),
                 "md5": self.identity(v), "production": prod is not None and v.name == prod.name,
                 "reachable": self.reachable(v)}
                for v in self.known]
