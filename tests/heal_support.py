"""Projects with a model history, for the registry, rollback, heal and scenario tests.

Each is built once per test run and shared by the xdist workers (a file lock in the run's shared temp dir),
because every `dvc repro` costs seconds: built_project -> `promoted` (v0.0.1) -> `two_versions` (v0.0.2, a
model with fewer boosting rounds that still passes, its drift measured) -> `bad_candidate` (a one-round model that fails
validation, trained and validated but not promoted: what `make heal` must roll back). Tests get private copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from selfheal.core.atomic import md5_file
from selfheal.ops import sandbox

HGB = "hist_gradient_boosting"


# MLflow off keeps the many retrainings of these tests quick (tracking has its own tests)
NO_MLFLOW = {"SELFHEAL_MLFLOW": "0"}


def env() -> dict[str, str]:
    """The sandbox environment (venv first on PATH, git identity) without MLflow."""
    return {**sandbox.env(), **NO_MLFLOW}


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return sandbox.run(cmd, cwd, check, extra_env=NO_MLFLOW, **kw)


def selfheal(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(["selfheal", *args], cwd, check)


def set_max_iter(repo: Path, n: int) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"][HGB]["max_iter"] = n
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read(repo: Path, rel: str) -> dict:
    return json.loads((repo / rel).read_text())


def _version_tags(root: Path) -> dict[str, str | None]:
    """{version tag: the md5 in its message}, read with plain git."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname:strip=2)%00%(contents)%01", "refs/tags/"],
                         cwd=root, capture_output=True, text=True).stdout
    tags: dict[str, str | None] = {}
    for record in out.split("\x01"):
        name, _, message = record.strip("\n").partition("\x00")
        if "@v" in name:
            start = message.find("{")
            try:
                tags[name] = json.loads(message[start:]).get("md5") if start >= 0 else None
            except ValueError:
                tags[name] = None
    return tags


def production_of(repo: Path) -> dict:
    """{version, md5} of the latest `model#prod#N` assignment, read from the git tags with plain git (not
    selfheal's registry code); {} before the first promotion."""
    out = subprocess.run(["git", "for-each-ref", "--format=%(refname:strip=2)%00%(contents)%01",
                          "refs/tags/model#prod#*"], cwd=repo, capture_output=True, text=True).stdout
    latest: tuple[int, str] | None = None
    for record in out.split("\x01"):
        name, _, message = record.strip("\n").partition("\x00")
        counter = name.rsplit("#", 1)[-1]
        start = message.find("{")
        if counter.isdigit() and start >= 0:
            try:
                version = json.loads(message[start:]).get("version")
            except ValueError:
                continue
            if latest is None or int(counter) > latest[0]:
                latest = (int(counter), str(version))
    if latest is None:
        return {}
    return {"version": latest[1], "md5": _version_tags(repo).get(f"model@{latest[1]}")}


def model_md5(repo: Path) -> str:
    return md5_file(repo / "models/model.joblib")


def _shared(factory: pytest.TempPathFactory, worker_id: str, name: str, build: Callable[[Path], None]) -> Path:
    """Build `name` once per run (all workers share it); `build(dest)` fills a new directory."""
    root = factory.getbasetemp() if worker_id == "master" else factory.getbasetemp().parent
    dest, done = root / "heal-projects" / name, root / "heal-projects" / f"{name}.done"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if not done.exists():
            shutil.rmtree(dest, ignore_errors=True)
            build(dest)
            done.touch()
    return dest


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def promoted(tmp_path_factory: pytest.TempPathFactory, worker_id: str, built_project: Path) -> Path:
    def build(dest: Path) -> None:
        _copy(built_project, dest)
        selfheal("promote", cwd=dest)

    return _shared(tmp_path_factory, worker_id, "promoted", build)


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory: pytest.TempPathFactory, worker_id: str, promoted: Path) -> Path:
    def build(dest: Path) -> None:
        _copy(promoted, dest)
        set_max_iter(dest, 120)
        run(["dvc", "repro"], dest)  # monitor too: production's drift is measured, as heal requires
        selfheal("promote", cwd=dest)

    return _shared(tmp_path_factory, worker_id, "two_versions", build)


@pytest.fixture(scope="session")
def bad_candidate(tmp_path_factory: pytest.TempPathFactory, worker_id: str, two_versions: Path) -> Path:
    def build(dest: Path) -> None:
        _copy(two_versions, dest)
        set_max_iter(dest, 1)
        run(["dvc", "repro", "validate"], dest)
        assert read(dest, "metrics/validation.json")["passed"] is False

    return _shared(tmp_path_factory, worker_id, "bad_candidate", build)


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], Path]]:
    """`workdir(source)`: a private copy of a shared project, made the cwd, with the sandbox environment."""
    for key, value in env().items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)

    def make(source: Path) -> Path:
        repo = _copy(source, tmp_path / "project")
        monkeypatch.chdir(repo)
        return repo

    yield make
