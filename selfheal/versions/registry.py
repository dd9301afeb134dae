"""Registered model versions: GTO-format git tags whose message carries the version's metadata.

A version is `<artifact>@vX.Y.Z` (`model@vX.Y.Z` for our pipeline; a configured project names its own artifact) (an annotated tag on the promotion commit, whose dvc.lock pins the model's hash);
production assignments are `model#prod#N` tags, so `gto show` / `gto history` read this registry as well. The
tags are written and read with plain git: `import gto` costs over a second and `selfheal versions` or a
rollback must stay quick. The guide's timestamp names (`v20241120_150000`) are kept as each version's alias.

With a git remote (`origin`, or the only remote), the remote is the registry two runners share: its tags are
fetched first, and a version number or an assignment counter is claimed by pushing its tag. git never lets a
push overwrite an existing tag, so of two runners claiming the same name exactly one wins; the other fetches
and takes the next number, or stands down when the winner registered the same model bytes (promote.py).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from selfheal.core.errors import SelfHealError
from selfheal.versions import vcs

ARTIFACT = "model"
STAGE = "prod"
_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
CLAIM_TRIES = 10  # claims lost in a row to other runners before giving up
_FIELDS = ["%(refname:strip=2)", "%(objectname)", "%(*objectname)", "%(creatordate:iso-strict)", "%(contents)"]


@dataclass(frozen=True)
class Version:
    name: str  # v0.0.3
    commit: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)
    artifact: str = ARTIFACT

    @property
    def tag(self) -> str:
        return f"{in_tag(self.artifact)}@{self.name}"

    @property
    def md5(self) -> str | None:
        return self.meta.get("md5")

    @property
    def alias(self) -> str | None:
        return self.meta.get("alias")

    @property
    def key(self) -> tuple[int, int, int]:
        return semver(self.name) or (0, 0, 0)


@dataclass(frozen=True)
class Assignment:
    counter: int
    version: str
    commit: str
    created_at: str
    meta: dict[str, Any] = field(default_factory=dict)


def semver(name: str) -> tuple[int, int, int] | None:
    match = _SEMVER.match(name)
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def alias_for(when: datetime) -> str:
    """The guide's version name for a promotion time: v20241120_150000."""
    return when.strftime("v%Y%m%d_%H%M%S")


def _message_meta(message: str) -> dict[str, Any]:
    """The JSON block after the tag's first (human) line; {} for tags made by other tools."""
    start = message.find("{")
    try:
        meta = json.loads(message[start:]) if start >= 0 else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _tags(pattern: str, cwd: str | Path) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(tag name, commit, creation time, metadata) of the tags matching `pattern`."""
    fmt = "%00".join(_FIELDS) + "%01"
    out = vcs.git("for-each-ref", f"--format={fmt}", f"refs/tags/{pattern}", cwd=cwd)
    rows = []
    for record in out.split("\x01"):
        parts = record.lstrip("\n").split("\x00")
        if len(parts) == 5:
            name, obj, peeled, created, message = parts
            rows.append((name, peeled or obj, created, _message_meta(message)))
    return rows


def in_tag(artifact: str) -> str:
    """The artifact's name as GTO writes it in a tag: a pipeline in a subfolder names its artifact
    `<folder>:<name>`, tagged `<folder>=<name>@v1.0.0`."""
    return artifact.replace(":", "=")


def versions(cwd: str | Path = ".", artifact: str = ARTIFACT) -> list[Version]:
    """Every registered version of `artifact`, oldest first (semver order); tags made by GTO itself included."""
    found = [
        Version(name.split("@", 1)[1], commit, created, meta, artifact)
        for name, commit, created, meta in _tags(f"{in_tag(artifact)}@*", cwd)
        if semver(name.split("@", 1)[1])
    ]
    return sorted(found, key=lambda v: v.key)


def assignments(cwd: str | Path = ".", artifact: str = ARTIFACT, stage: str = STAGE,
                known: list[Version] | None = None) -> list[Assignment]:
    """Production (`stage`) assignments, oldest first; each names the version it put into production (`known`:
    the versions, when the caller has just read them)."""
    by_commit: dict[str, list[Version]] = {}
    for v in versions(cwd, artifact) if known is None else known:
        by_commit.setdefault(v.commit, []).append(v)
    out = []
    pattern = re.compile(rf"^{re.escape(in_tag(artifact))}#{re.escape(stage)}#(\d+)$")
    for name, commit, created, meta in _tags(f"{in_tag(artifact)}#{stage}#*", cwd):
        match = pattern.match(name)
        if match:
            on_commit = by_commit.get(commit) or []
            version = meta.get("version") or (on_commit[-1].name if on_commit else "?")
            out.append(Assignment(int(match.group(1)), version, commit, created, meta))
    return sorted(out, key=lambda a: a.counter)


def find(ref: str, known: list[Version]) -> Version:
    """A version by name (v0.0.3 or 0.0.3), tag (model@v0.0.3), seed alias (v20241120_150000) or md5 prefix."""
    artifact = known[0].artifact if known else ARTIFACT
    ref = ref.strip().removeprefix(f"{artifact}@").removeprefix(f"{in_tag(artifact)}@")
    wanted = semver(ref)
    for v in known:
        if (wanted and v.key == wanted) or ref == v.alias or (len(ref) >= 7 and (v.md5 or "").startswith(ref)):
            return v
    names = ", ".join(f"{v.name} ({v.alias})" if v.alias else v.name for v in known) or "none registered yet"
    raise SelfHealError(f"unknown model version {ref!r}; known versions: {names}")


def next_version(known: list[Version]) -> str:
    """GTO's default bump: the patch number of the highest version, v0.0.1 first."""
    major, minor, patch = max((v.key for v in known), default=(0, 0, 0))
    return f"v{major}.{minor}.{patch + 1}"


def shared_remote(cwd: str | Path = ".") -> str | None:
    """The git remote that holds the shared registry, when the user configured one (`registry.remote` in
    selfheal.yaml); None otherwise: then tags stay in this clone and nothing is pushed to any git remote."""
    from selfheal.core import project

    path = Path(cwd) / project.project_file()
    remote = project.load(path).registry.remote if path.is_file() else None
    if remote is None:
        return None
    if remote not in vcs.git("remote", cwd=cwd).split():
        raise SelfHealError(f"{project.project_file()}: registry.remote {remote!r} is not a git remote of this "
                            f"repository (`git remote -v` lists them)")
    return remote


def sync(remote: str, cwd: str | Path = ".", artifact: str = ARTIFACT) -> None:
    """Fetch the remote's version and assignment tags; the remote wins over a local tag of the same name (a
    claim this runner lost, left by an interrupted promotion)."""
    vcs.git("fetch", "--quiet", "--no-tags", remote, f"+refs/tags/{in_tag(artifact)}@*:refs/tags/{in_tag(artifact)}@*",
            f"+refs/tags/{in_tag(artifact)}#*:refs/tags/{in_tag(artifact)}#*", cwd=cwd)


def _claim(tag: str, message: str, commit: str, remote: str | None, cwd: str | Path) -> bool:
    """Create `tag` on `commit` and, with a remote, push it: False when the remote already had the name (the
    local tag is dropped and the remote's fetched); other push failures are errors."""
    vcs.git("tag", "-a", tag, "-m", message, commit, cwd=cwd)
    if remote is None:
        return True
    try:
        vcs.git("push", "--quiet", remote, f"refs/tags/{tag}", cwd=cwd)
        return True
    except SelfHealError as exc:
        vcs.git("tag", "-d", tag, cwd=cwd)
        vcs.git("fetch", "--quiet", "--no-tags", remote, f"+refs/tags/{tag}:refs/tags/{tag}", cwd=cwd, check=False)
        if vcs.git("tag", "--list", tag, cwd=cwd).strip():
            return False  # another runner claimed it first
        raise SelfHealError(f"cannot claim {tag} on git remote {remote!r}: {exc}") from None


def register(name: str, commit: str, meta: dict[str, Any], cwd: str | Path = ".",
             remote: str | None = None, artifact: str = ARTIFACT) -> Version | None:
    """Tag `commit` as version `name` of `artifact` (idempotent for the same commit); None when `remote` already
    has the name on another commit (lost to another runner: fetched, so the caller can take the next number)."""
    existing = {v.name: v for v in versions(cwd, artifact)}
    if name in existing:
        if existing[name].commit != commit:
            raise SelfHealError(f"{in_tag(artifact)}@{name} already tags another commit ({existing[name].commit[:10]})")
        return existing[name]
    message = f"Registering artifact {artifact} version {name}\n\n{json.dumps(meta, indent=2, default=str)}"
    if not _claim(f"{in_tag(artifact)}@{name}", message, commit, remote, cwd):
        return None
    return next(v for v in versions(cwd, artifact) if v.name == name)


def _last_counter(cwd: str | Path, artifact: str) -> int:
    """The highest assignment number of `artifact` in any stage: GTO numbers `<artifact>#<stage>#N` per artifact
    (`#dev#1`, `#prod#2`, `#staging#3`), so a new assignment never reuses a number another stage holds."""
    numbers = [name.rsplit("#", 1)[1] for name, *_ in _tags(f"{in_tag(artifact)}#*#*", cwd)]
    return max((int(n) for n in numbers if n.isdigit()), default=0)


def assign_production(version: Version, reason: str, cwd: str | Path = ".", remote: str | None = None,
                      stage: str = STAGE, judge: Callable[[Version | None], Any] | None = None) -> bool:
    """Record `version` entering production (a GTO `stage` assignment), unless it is already the latest one;
    True when a new assignment tag was written.

    With `remote`, the counter is claimed there: a runner that loses it reads the remote's history again, stands
    down when the winner assigned the same version, and otherwise calls `judge` with the production the winner
    assigned (it raises when `version` no longer passes against it) before claiming the next counter."""
    meta = {"version": version.name, "reason": reason, "host": socket.gethostname()}
    message = (f"Assigning stage {stage} to artifact {version.artifact} version {version.name}\n\n"
               f"{json.dumps(meta, indent=2)}")
    for _ in range(CLAIM_TRIES):
        history = assignments(cwd, version.artifact, stage)
        if history and history[-1].version == version.name:
            return False
        counter = _last_counter(cwd, version.artifact) + 1
        if _claim(f"{in_tag(version.artifact)}#{stage}#{counter}", message, version.commit, remote, cwd):
            return True
        if judge is not None:
            judge(production(cwd, version.artifact, stage))
    raise SelfHealError(f"could not claim a production assignment on git remote {remote!r} in {CLAIM_TRIES} tries")


def production(cwd: str | Path = ".", artifact: str = ARTIFACT, stage: str = STAGE,
               known: list[Version] | None = None) -> Version | None:
    """Production: the version named by the latest `<artifact>#<stage>#N` assignment, whoever made it (selfheal
    or a person with `gto assign`); None before the first assignment."""
    known = versions(cwd, artifact) if known is None else known
    history = assignments(cwd, artifact, stage, known)
    return assigned(history, known) if history else None


def assigned(history: list[Assignment], known: list[Version]) -> Version | None:
    """The version the latest of `history`'s assignments names (None without one, or for an unknown name)."""
    return next((v for v in known if v.name == history[-1].version), None) if history else None


def mlflow_alias(version: Version, md5: str | None, cwd: str | Path = ".",
                 refused: tuple[str, str] | None = None) -> str | None:
    """Move MLflow's `prod` alias to the model now in production (the run tagged with its `md5`), so the MLflow
    UI agrees with GTO, and tag the run of a `refused` candidate (its md5, the gate's reason) with the verdict.
    Returns the MLflow version number, or None when there is nothing to move (no store, no run made these
    bytes). A store failure is a warning: production has already changed, and the next promote or rollback
    fixes it."""
    from selfheal.pipeline import tracking

    cwd = Path(cwd)
    try:
        if refused is not None:
            tracking.tag_refused(tracking.run_for_model(refused[0], cwd), refused[1], cwd)
        return tracking.set_production_alias(tracking.run_for_model(md5, cwd), version.name, cwd)
    except SelfHealError as exc:
        print(f"⚠️  MLflow alias '{tracking.PROD_ALIAS}' not moved to {version.name}: {exc}")
        return None
