"""git and dvc as a user runs them, plus cheap reads of DVC state (dvc.lock, the local cache).

Subprocesses rather than the Python APIs: `import dvc.repo` costs about a second and `import gto` more, while
the fast paths (listing versions, a rollback served from the local cache, a heal on a healthy pipeline) need
neither. Reading dvc.lock and the cache layout directly keeps those paths well under a second.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfheal.core import workspace
from selfheal.core.config import parse_yaml
from selfheal.core.errors import SelfHealError


def _ours(cwd: str | Path) -> bool:
    """Whether `cwd` is selfheal's own pipeline, whose stages are selfheal's code (kind selfheal, or our
    layout without a selfheal.yaml)."""
    from selfheal.core.project import current

    try:
        return current(cwd).kind == "selfheal"
    except SelfHealError:
        return False


def _tool(name: str, cwd: str | Path = ".") -> str:
    """The dvc a project's commands use: for our own pipeline the one beside this interpreter; for any other
    project the user's (the first on PATH, as their shell finds it), else ours."""
    beside = Path(sys.executable).parent / name
    if _ours(cwd):
        return str(beside) if beside.exists() else (shutil.which(name) or name)
    return shutil.which(name) or (str(beside) if beside.exists() else name)


def env(cwd: str | Path = ".") -> dict[str, str]:
    """The environment a project's commands run in: the user's, as their shell has it - selfheal never puts its
    own interpreter first for a project it did not write, whose stages need that project's packages. Our own
    pipeline's stages call `python`, which must be the interpreter selfheal runs in (its venv holds the
    pipeline's packages), whether or not the venv was activated: for it that directory comes first."""
    if not _ours(cwd):
        return dict(os.environ)
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _run(cmd: list[str], cwd: str | Path, check: bool) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env(cwd))
    except FileNotFoundError:
        raise SelfHealError(f"`{cmd[0]}` not found on PATH") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise SelfHealError(f"`{' '.join(Path(cmd[0]).name.split() + cmd[1:])}` failed: {' | '.join(detail[-3:])}")
    return proc


def git(*args: str, cwd: str | Path = ".", check: bool = True) -> str:
    return _run(["git", *args], cwd, check).stdout


def dvc(*args: str, cwd: str | Path = ".", check: bool = True) -> subprocess.CompletedProcess:
    """A DVC command; DVC's own repository lock held by a live process (a `dvc repro` left running by a killed
    heal, a person's) is waited on, never a failure. A dead holder's lock is no lock: the OS released it."""
    return _run([_tool("dvc", cwd), "--wait-for-lock", *args], cwd, check)


def head(cwd: str | Path = ".") -> str | None:
    """The commit HEAD points at, or None in a repo without commits."""
    proc = _run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd, check=False)
    return proc.stdout.strip() or None


def show(rev: str, path: str | Path, cwd: str | Path = ".") -> bytes | None:
    """A file's bytes at a revision (None when the revision does not have it); `path` is relative to `cwd`, which
    may be a folder of the repository (a pipeline in a subfolder)."""
    proc = subprocess.run(["git", "show", f"{rev}:./{Path(path).as_posix()}"], cwd=cwd, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def parse_lock(text: str | bytes | None, dirs: dict[str, str] | None = None) -> dict[str, Any]:
    """dvc.lock as {stage: entry}, every path relative to the pipeline's folder (dvc.lock writes a stage's paths
    relative to its `wdir`: `dirs`, from stage_dirs); empty when absent."""
    if not text:
        return {}
    stages = dict((parse_yaml(text) or {}).get("stages") or {})
    for name, entry in stages.items():
        if wdir := _wdir(name, dirs or {}):
            stages[name] = _rebased(entry, lambda path: os.path.normpath(os.path.join(wdir, path)))  # called at once
    return stages


def read_lock(path: str | Path = workspace.DVC_LOCK) -> dict[str, Any]:
    path = Path(path)
    return parse_lock(path.read_bytes(), stage_dirs(path.parent / workspace.DVC_YAML)) if path.exists() else {}


def stage_dirs(dvc_yaml: str | Path = workspace.DVC_YAML) -> dict[str, str]:
    """{stage: wdir} of the stages dvc.yaml runs in a folder of their own (`wdir:`); {} for most pipelines."""
    try:
        text = Path(dvc_yaml).read_text(encoding="utf-8")
    except OSError:
        return {}
    if "wdir:" not in text:
        return {}
    stages = (parse_yaml(text) or {}).get("stages") or {}
    bodies = {name: stage.get("do", stage) for name, stage in stages.items() if isinstance(stage, dict)}
    return {name: str(body["wdir"]) for name, body in bodies.items()
            if isinstance(body, dict) and body.get("wdir") not in (None, ".", "")}


def lock_entry_for_dvc(name: str, entry: dict[str, Any], dirs: dict[str, str]) -> dict[str, Any]:
    """Stage `name`'s parsed entry (paths relative to the pipeline's folder) as dvc.lock writes it (relative to
    the stage's wdir, from stage_dirs)."""
    wdir = _wdir(name, dirs)
    return _rebased(entry, lambda path: os.path.relpath(path, wdir)) if wdir else entry


def _wdir(name: str, dirs: dict[str, str]) -> str | None:
    """A dvc.lock stage's wdir: a foreach stage `train@rf` has its `train` block's."""
    return dirs.get(name.split("@")[0])


def _rebased(entry: dict[str, Any], move: Callable[[str], str]) -> dict[str, Any]:
    """`entry` with the paths of its deps, outs and params files moved by `move`."""
    out = dict(entry)
    for key in ("deps", "outs"):
        if entry.get(key):
            out[key] = [{**item, "path": move(item["path"])} for item in entry[key]]
    if entry.get("params"):
        out["params"] = {move(file): values for file, values in entry["params"].items()}
    return out


def hashes(entry: dict[str, Any], key: str = "outs") -> dict[str, str]:
    """{path: md5} of a lock entry's outs (or deps)."""
    return {item["path"]: item.get("md5", "") for item in entry.get(key) or []}


def git_tracked_outputs(dvc_yaml: str | Path = workspace.DVC_YAML) -> dict[str, list[str]]:
    """{stage: [paths]} of the outputs (outs, metrics, plots) declared `cache: false`: git, not the DVC cache,
    keeps them. A plain dvc.yaml is read directly; a templated one (`${...}`, foreach, matrix) through DVC's API,
    which resolves it as `dvc repro` does."""
    text = Path(dvc_yaml).read_text(encoding="utf-8")
    if "${" in text or "foreach:" in text or "matrix:" in text:
        return {name: stage.uncached for name, stage in resolved_stages(Path(dvc_yaml)).items()}
    stages = (parse_yaml(text) or {}).get("stages") or {}
    out: dict[str, list[str]] = {}
    for name, stage in stages.items():
        paths, wdir = [], str(stage.get("wdir") or ".")
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                path, opts = (next(iter(item.items())) if isinstance(item, dict) else (item, {}))
                if (opts or {}).get("cache", True) is False:
                    paths.append(os.path.normpath(os.path.join(wdir, str(path))))  # relative to the pipeline
        out[name] = paths
    return out


@dataclass
class ResolvedStage:
    """A stage as DVC resolves it (templates, foreach and matrix expanded); paths relative to the project root."""

    outs: list[str]  # every output, metrics and plots included
    uncached: list[str]  # the outputs git keeps (`cache: false`)
    metrics: list[str]
    deps: list[str]
    params: dict[str, list[str]]  # {params file: the dotted keys the stage reads}


def resolved_stages(dvc_yaml: str | Path = workspace.DVC_YAML) -> dict[str, ResolvedStage]:
    """{stage name: stage} of `dvc_yaml` through DVC's own API (a dvc.yaml in a subfolder, with its own
    dvc.lock, is left out); a one-line error when DVC cannot read it."""
    from dvc.repo import Repo

    path = Path(dvc_yaml).resolve()
    root = path.parent

    def rel(fs_path: str) -> str:
        return Path(os.path.relpath(fs_path, root)).as_posix()

    try:
        with Repo(str(root)) as repo:
            return {stage.addressing: ResolvedStage([rel(o.fs_path) for o in stage.outs],
                                                    [rel(o.fs_path) for o in stage.outs if not o.use_cache],
                                                    [rel(o.fs_path) for o in stage.outs if getattr(o, "metric", False)],
                                                    [rel(d.fs_path) for d in stage.deps],
                                                    {rel(d.fs_path): list(d.params or []) for d in stage.deps
                                                     if type(d).__name__ == "ParamsDependency"})
                    for stage in repo.index.stages if Path(stage.path).resolve() == path}
    except Exception as exc:  # DVC's parse and template errors
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise SelfHealError(f"{dvc_yaml}: DVC cannot read it ({type(exc).__name__}: {first})") from None


def folder(cwd: str | Path = ".") -> str:
    """Where `cwd` is in its git repository (`pipelines/rf`), "" at its top."""
    return git("rev-parse", "--show-prefix", cwd=cwd).strip().rstrip("/")


def dvc_root(cwd: str | Path = ".") -> Path | None:
    """The DVC repository `cwd` is in: the nearest folder upwards holding `.dvc/` (a pipeline's dvc.yaml may sit
    in a subfolder of it); None outside one."""
    here = Path(cwd).resolve()
    return next((d for d in (here, *here.parents) if (d / ".dvc").is_dir()), None)


def _dvc_config(root: Path) -> configparser.ConfigParser:
    """.dvc/config with .dvc/config.local over it, as DVC reads them (read directly: importing dvc costs ~1 s)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    top = dvc_root(root) or root
    parser.read([top / ".dvc/config", top / ".dvc/config.local"])
    return parser


def default_remote(root: str | Path = ".") -> str | None:
    """The name of the default DVC remote (`core.remote`), None without one."""
    return _dvc_config(Path(root)).get("core", "remote", fallback=None)


def cache_dir(root: str | Path = ".") -> Path:
    """The DVC cache directory (`cache.dir` in .dvc/config or config.local, default .dvc/cache)."""
    root = dvc_root(root) or Path(root)
    configured = _dvc_config(root).get("cache", "dir", fallback=None)
    return (root / ".dvc" / configured).resolve() if configured else root / ".dvc/cache"


def cache_path(md5: str, root: str | Path = ".") -> Path:
    """Where DVC 3 keeps a file's bytes: <cache>/files/md5/ab/cdef..."""
    return object_path(cache_dir(root), md5)


def object_path(store: Path, md5: str) -> Path:
    """A file's place in a DVC 3 object store (the cache, or a local remote): <store>/files/md5/ab/cdef..."""
    return store / "files" / "md5" / md5[:2] / md5[2:]


def local_remote_dir(name: str, root: str | Path = ".") -> Path | None:
    """The directory of remote `name` when it is a local path (DVC resolves a relative URL against .dvc/)."""
    root = dvc_root(root) or Path(root)
    url = _dvc_config(root).get(f'remote "{name}"', "url", fallback=None)
    if not url or "://" in url:
        return None
    return (root / ".dvc" / url).resolve()
