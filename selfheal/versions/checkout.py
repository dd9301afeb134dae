"""Put pipeline stages back as a dvc.lock recorded them: the bytes of every output, verified, then the lock.

This is `dvc checkout` for chosen stages of another revision, done directly so a rollback takes well under a
second: each output comes from the DVC cache (or, for `cache: false` outputs, from git or a backup), its md5 is
checked against the lock before it replaces anything, and every file is swapped in atomically. A directory
output (a `.dir` hash) is restored from its manifest in the cache: every listed file md5-verified, files the
version did not have removed. An uncached report (monitoring/drift_report.html) with no copy anywhere is left
as it is, never a reason to fail. A missing cache
object is fetched from the DVC remote first. The stages' lock entries are merged into the workspace dvc.lock,
so a later `dvc status` compares the workspace with exactly what was restored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import vcs

Source = Callable[[str], "bytes | None"]
# told the md5 production now has, so a running service can swap to it (see selfheal.service.client.reloader);
# returns True/False, None (signalled) or a note, which the audit entry records
Reload = Callable[[str | None], "bool | str | None"]
Fetch = Callable[[], None]


def fetch_revision(commit: str, cwd: str | Path = ".") -> None:
    """Download a revision's DVC outputs from the remote into the cache.

    Through the Python API on purpose: `dvc fetch --all-tags` resolves a relative remote URL (this project's
    default `../.dvcstore`) against the root of the git tree for other revisions and finds nothing, so the
    workspace's resolved remote URLs are passed in as overrides.
    """
    from dvc.repo import Repo

    try:
        with Repo(str(cwd)) as repo:
            remotes = {name: dict(conf) for name, conf in repo.config["remote"].items()}
        with Repo(str(cwd), config={"remote": remotes}) as repo:
            repo.fetch(revs=[commit])
    except Exception as exc:  # no remote, unreachable remote, missing objects: say so, change nothing
        raise SelfHealError(f"dvc fetch of revision {commit[:10]} failed: {type(exc).__name__}: {exc}") from None


def push_object(md5: str, remote: str, cwd: str | Path = ".") -> None:
    """Upload one cache object (say a failed candidate no dvc.lock pins any more) to the named DVC remote.

    A local remote (the default .dvcstore) is a plain copy in DVC's layout: importing dvc costs a second."""
    local = vcs.local_remote_dir(remote, cwd)
    if local is not None:
        target = vcs.object_path(local, md5)
        if not target.is_file():
            atomic.write_bytes(target, vcs.cache_path(md5, cwd).read_bytes())
        return
    from dvc.repo import Repo
    from dvc_data.hashfile.hash_info import HashInfo

    try:
        with Repo(str(cwd)) as repo:
            result = repo.cloud.push([HashInfo("md5", md5)], remote=remote)
    except Exception as exc:
        raise SelfHealError(f"dvc push of {md5} to remote '{remote}' failed: {type(exc).__name__}: {exc}") from None
    if result.failed:
        raise SelfHealError(f"dvc push of {md5} to remote '{remote}' failed")


def verified(path: str, md5: str, source: Source, cwd: str | Path = ".", fetch: Fetch | None = None) -> bytes:
    """One output's bytes by md5: from the DVC cache, else `source`, else (after `fetch`) the cache again."""
    return _verified(path, md5, source, Path(cwd), [fetch])


def from_workspace(cwd: str | Path = ".") -> Source:
    """Files as they are in the workspace now (used only through `verified`, which checks their md5)."""
    return lambda path: (Path(cwd) / path).read_bytes() if (Path(cwd) / path).is_file() else None


def _verified(path: str, md5: str, source: Source, cwd: Path, fetch: list[Fetch | None]) -> bytes:
    """The output's bytes from the cache, else `source`, else the remote; always checked against `md5` (a `.dir`
    manifest against its hash without the suffix)."""
    for _ in range(2):
        cached = vcs.cache_path(md5, cwd)
        data = cached.read_bytes() if cached.is_file() else source(path)
        if data is not None and hashlib.md5(data).hexdigest() == md5.removesuffix(".dir"):
            return data
        if fetch[0] is None:
            break
        fetch_once, fetch[0] = fetch[0], None  # one fetch brings every output of the revision
        fetch_once()
    raise SelfHealError(
        f"{path}: no copy with the recorded md5 {md5} in the DVC cache, git or the remote; nothing was changed"
    )


def restore_stages(
    lock: dict[str, Any],
    stages: list[str],
    source: Source,
    cwd: str | Path = ".",
    last: str | None = None,
    fetch: Fetch | None = None,
) -> dict[str, str]:
    """Restore `stages` of `lock` (a parsed dvc.lock) into the workspace; returns {path: md5} restored.

    `last` (an output path) is written after everything else, so an interrupted restore is visible in it and a
    rerun completes the job.
    `fetch` downloads missing cache objects from the DVC remote (called at most once).
    """
    cwd = Path(cwd)
    missing = [s for s in stages if s not in lock]
    if missing:
        raise SelfHealError(f"the recorded dvc.lock has no stage(s) {missing}; nothing was changed")
    fetcher: list[Fetch | None] = [fetch]
    staged: dict[str, tuple[bytes, str]] = {}
    reports = _uncached_reports(cwd)
    dirs: dict[str, str] = {}
    for stage in stages:
        for path, md5 in vcs.hashes(lock[stage]).items():
            if md5.endswith(".dir"):
                dirs[path] = md5
                staged.update(_directory(path, md5, cwd, fetcher))
                continue
            try:
                staged[path] = (_verified(path, md5, source, cwd, fetcher), md5)
            except SelfHealError:
                if path not in reports:
                    raise
                print(f"ℹ️  {path}: no copy with the recorded md5 (an uncached report, e.g. removed by `dvc exp "
                      f"apply`); left as it is - `dvc repro {stage}` rewrites it")
    order = sorted(staged, key=lambda p: (p == last, p.endswith(".joblib")))  # the model late, `last` last
    for directory in dirs:
        if (cwd / directory).is_file():
            (cwd / directory).unlink()  # the version has a directory where the workspace has a file
    for path in order[:-1] if last in staged else order:
        _clear_way(cwd, path)
        atomic.write_bytes(cwd / path, staged[path][0])
    for directory in dirs:
        _prune(cwd / directory, {cwd / p for p in staged})
    _merge_lock(cwd / workspace.DVC_LOCK, {s: lock[s] for s in stages})
    if last in staged:
        atomic.write_bytes(cwd / last, staged[last][0])
    return {**{path: md5 for path, (_, md5) in staged.items()}, **dirs}


def available(lock: dict[str, Any], stages: list[str], source: Source, cwd: str | Path = ".",
              fetch: Fetch | None = None) -> bool:
    """Whether every output of `stages` has a copy to restore from - the DVC cache (every file of a directory
    output too) or `source` for outputs git keeps - after at most one `fetch` from the remote. Presence only:
    a restore verifies every byte anyway."""
    cwd = Path(cwd)

    def present(path: str, md5: str) -> bool:
        cached = vcs.cache_path(md5, cwd)
        if not md5.endswith(".dir"):
            return cached.is_file() or source(path) is not None
        if not cached.is_file():
            return False
        try:
            entries = json.loads(cached.read_bytes())
        except ValueError:
            return False
        return isinstance(entries, list) and all(vcs.cache_path(e["md5"], cwd).is_file() for e in entries)

    outs = [(p, m) for s in stages for p, m in vcs.hashes(lock.get(s) or {}).items() if m]
    if all(present(p, m) for p, m in outs):
        return True
    if fetch is None:
        return False
    try:
        fetch()
    except SelfHealError:
        return False
    return all(present(p, m) for p, m in outs)


def _manifest(path: str, md5: str, cwd: Path, fetch: list[Fetch | None]) -> list[dict[str, str]]:
    """A directory output's file list [{relpath, md5}] from its verified `.dir` object."""
    entries = json.loads(_verified(path, md5, lambda _: None, cwd, fetch))
    if not isinstance(entries, list):
        raise SelfHealError(f"{path}: the cache object {md5} is not a DVC directory manifest")
    return entries


def differs(path: str, md5: str, cwd: str | Path = ".") -> bool:
    """Whether a workspace output is not the bytes `md5` pins: a file by its md5, a directory file by file
    against its manifest in the cache (without the manifest only its presence can be checked)."""
    cwd = Path(cwd)
    target = cwd / path
    if not md5.endswith(".dir"):
        return not target.is_file() or atomic.md5_file(target) != md5
    if not target.is_dir():
        return True
    try:
        entries = _manifest(path, md5, cwd, [None])
    except SelfHealError:
        return False
    present = {f.relative_to(target).as_posix() for f in target.rglob("*") if f.is_file()}
    return present != {e["relpath"] for e in entries} or any(
        atomic.md5_file(target / e["relpath"]) != e["md5"] for e in entries)


def _directory(path: str, md5: str, cwd: Path, fetch: list[Fetch | None]) -> dict[str, tuple[bytes, str]]:
    """Every file of a directory output, verified: {path/relpath: (bytes, md5)}."""
    out = {}
    for entry in _manifest(path, md5, cwd, fetch):
        file = f"{path}/{entry['relpath']}"
        out[file] = (_verified(file, entry["md5"], lambda _: None, cwd, fetch), entry["md5"])
    return out


def _clear_way(cwd: Path, path: str) -> None:
    """Remove a directory standing where the version has a file (a model that was a directory, or the reverse)."""
    target = cwd / path
    if target.is_dir() and not target.is_symlink():
        import shutil

        shutil.rmtree(target)
    for parent in Path(path).parents:
        if parent != Path(".") and (cwd / parent).is_file():
            (cwd / parent).unlink()


def _prune(directory: Path, keep: set[Path]) -> None:
    """Remove files (then empty folders) under a restored directory that its version did not have."""
    for file in sorted(directory.rglob("*"), reverse=True):
        if file.is_file() and file not in keep:
            file.unlink()
        elif file.is_dir() and not any(file.iterdir()):
            file.rmdir()


def read_output(lock: dict[str, Any], path: str, source: Source, cwd: str | Path = ".", fetch: Fetch | None = None
                ) -> bytes | None:
    """One file as a revision's dvc.lock recorded it, verified - also a file inside a directory output (a metrics
    JSON in `eval/`); None when no output of the lock holds `path`."""
    cwd = Path(cwd)
    fetcher: list[Fetch | None] = [fetch]
    for entry in lock.values():
        for out, md5 in vcs.hashes(entry).items():
            if out == path and not md5.endswith(".dir"):
                return _verified(path, md5, source, cwd, fetcher)
            if md5.endswith(".dir") and Path(out) in Path(path).parents:
                rel = Path(path).relative_to(out).as_posix()
                for item in _manifest(out, md5, cwd, fetcher):
                    if item["relpath"] == rel:
                        return _verified(path, item["md5"], source, cwd, fetcher)
                return None
    return None


def _uncached_reports(cwd: Path) -> set[str]:
    """Outputs kept by no cache and no commit: the drift report, which dvc.lock files written before it stopped
    being a DVC output (its HTML differs on every run) still list. A missing copy never blocks a restore;
    `selfheal drift-report` writes it again. Outputs committed to git (metrics, records, plots) are not among them."""
    return {str(workspace.DRIFT_REPORT)}


def _merge_lock(path: Path, entries: dict[str, Any]) -> None:
    """Replace the given stages' entries in dvc.lock (other stages keep describing the workspace)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    doc = doc or {"schema": "2.0", "stages": {}}
    dirs = vcs.stage_dirs(path.parent / workspace.DVC_YAML)
    doc.setdefault("stages", {}).update(
        {name: vcs.lock_entry_for_dvc(name, entry, dirs) for name, entry in entries.items()})
    atomic.write_text(path, yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def from_revision(commit: str, cwd: str | Path = ".") -> Source:
    """Non-cached outputs as committed at `commit`."""
    return lambda path: vcs.show(commit, path, cwd)


def from_backup(backup_dir: Path) -> Source:
    """Non-cached outputs as saved in a .selfheal backup."""
    return lambda path: (backup_dir / path).read_bytes() if (backup_dir / path).is_file() else None
