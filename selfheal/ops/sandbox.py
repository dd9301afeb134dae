"""A throwaway copy of a selfheal project in its own git repo: what tests and benchmarks run `dvc` in.

It holds what a fresh clone holds; everything else (data, DVC cache, MLflow store) is made inside the copy.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import yaml

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError
from selfheal.service import procs
from selfheal.versions import vcs

PROJECT_FILES = [
    str(workspace.DVC_YAML),
    str(workspace.PARAMS),
    "selfheal.yaml",
    "stages",
    "selfheal",
    "config",
    ".dvc/config",
    str(workspace.PLOTS_TEMPLATE),  # .dvc/config names it
    ".dvcignore",
    ".gitignore",
]

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "selfheal sandbox",
    "GIT_AUTHOR_EMAIL": "sandbox@selfheal.invalid",
    "GIT_COMMITTER_NAME": "selfheal sandbox",
    "GIT_COMMITTER_EMAIL": "sandbox@selfheal.invalid",
}


def env() -> dict[str, str]:
    """The environment after `make run`: the venv first on PATH, a git identity, no analytics, MLflow local."""
    out = {**os.environ, **GIT_IDENTITY}
    out["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{out.get('PATH', '')}"
    out["DVC_NO_ANALYTICS"] = "1"
    out["MPLBACKEND"] = "Agg"
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def run(
    cmd: list[str], cwd: Path, check: bool = True, extra_env: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run a command as a user would; a failure carries its output so a test report shows why."""
    proc = subprocess.run(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


SOURCE = Path(__file__).resolve().parents[2]  # the checkout this selfheal runs from: stages/ beside selfheal/


def stage_argv(stage: str) -> list[str]:
    """A DVC stage's command as dvc.yaml runs it, with this interpreter."""
    return [sys.executable, "-m", f"stages.{stage}"]


def run_stage(stage: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run one stage in `cwd` (a directory with params.yaml and the stage's inputs) with this checkout's code, as
    DVC would: a real process, MLflow in `cwd` unless `extra_env` says otherwise."""
    environ = {k: v for k, v in env().items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(stage_argv(stage), cwd=cwd, env={**environ, "PYTHONPATH": str(SOURCE), **extra_env},
                          capture_output=True, text=True, timeout=240)


def set_params(repo: Path, **groups: dict) -> None:
    """Shallow-merge values into groups of a sandbox: params.yaml's, or selfheal.yaml's for the groups only
    selfheal reads (service_recovery, escalation)."""
    from selfheal.core.config import OWN_GROUPS
    from selfheal.core.project import OURS

    for name, own in ((workspace.PARAMS, False), (workspace.PROJECT_FILE, True)):
        mine = {group: values for group, values in groups.items() if (group in OWN_GROUPS) == own}
        if mine:
            path = repo / name
            doc: dict[str, Any] = yaml.safe_load(path.read_text()) if path.exists() else dict(OURS)  # our layout, as without it
            for group, values in mine.items():
                doc[group] = {**doc.get(group, {}), **values}
            path.write_text(yaml.safe_dump(doc, sort_keys=False))


def commit(repo: Path, message: str) -> None:
    """Commit everything that changed (nothing to commit is no error: promote may have committed it all)."""
    run(["git", "add", "-A"], repo)
    if run(["git", "diff", "--cached", "--quiet"], repo, check=False).returncode:
        run(["git", "commit", "-q", "-m", message], repo)


def create(dest: Path, source: Path, **params: dict) -> Path:
    """Copy the project from `source` into a new git repo at `dest`, write its data, commit: a fresh clone."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in PROJECT_FILES:
        src, target = source / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, target)
    if params:
        set_params(dest, **params)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["selfheal", "synth"], dest)
    commit(dest, "project as cloned")
    return dest


def clone(dest: Path, source: Path, remote: Path) -> Path:
    """A fresh clone of the git + DVC repository at `source` (its commits and tags; no git remote, so nothing is
    ever pushed back), its DVC outputs pulled from the source's cache (read only: never the source's DVC remote),
    and the project's DVC remotes replaced by the local folder `remote`. Outputs missing from that cache are
    left to `dvc repro`."""
    must(["git", "clone", "-q", "--no-hardlinks", str(source), str(dest)], dest.parent)
    must(["git", "remote", "remove", "origin"], dest)
    config = configparser.ConfigParser(interpolation=None)
    config.read(dest / ".dvc/config")
    for section in [s for s in config.sections() if s.strip("'").startswith("remote ")]:
        config.remove_section(section)
    remote.mkdir(parents=True, exist_ok=True)
    config["core"] = {**(config["core"] if config.has_section("core") else {}), "remote": "drill"}
    config["'remote \"drill\"'"] = {"url": str(remote)}
    with (dest / ".dvc/config").open("w", encoding="utf-8") as fh:
        config.write(fh)
    source_cache = ["-r", "source-cache"]
    must(["dvc", "remote", "add", "--local", "source-cache", str(vcs.cache_dir(source))], dest)
    run(["dvc", "pull", "-q", *source_cache, "--allow-missing"], dest, check=False)
    run(["dvc", "fetch", "-q", *source_cache, "--all-tags"], dest, check=False)  # the versions to roll back to
    must(["dvc", "remote", "remove", "--local", "source-cache"], dest)
    return dest


def must(cmd: list[str], cwd: Path) -> str:
    """Run a command the drill cannot go on without; its stdout, else a one-line error."""
    proc = run(cmd, cwd, check=False)
    if proc.returncode != 0:
        raise SelfHealError(f"{' '.join(cmd[:3])} failed in {cwd}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc.stdout


def kill_all_in(directory: str | Path) -> int:
    """SIGKILL every process whose working directory is `directory`: how tests and benchmarks make sure the
    services, restarts and standbys they caused in a throwaway project do not outlive it. Returns how many."""
    target, me, killed = str(Path(directory).resolve()), os.getpid(), 0
    for proc in psutil.process_iter(["pid", "cwd"]):
        if proc.info["cwd"] == target and proc.pid != me:
            procs.kill_group(proc.pid)
            killed += 1
            with contextlib.suppress(psutil.Error):
                proc.wait(5)
    return killed
