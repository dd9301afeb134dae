"""Fixtures: projects selfheal did not write, shaped like iterative/example-get-started (tests/foreign_project.py),
built once per run and shared by the workers; `copy_of` gives a test its private copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import foreign_project as foreign
from tests.heal_support import _shared


def _build(**variant: object) -> Callable[[Path], None]:
    def build(dest: Path) -> None:
        foreign.create(dest / "proj", **variant)  # type: ignore[arg-type]

    return build


@pytest.fixture(scope="session")
def example(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """model.pkl, eval/ with avg_prec.test (max), v1.0.0 registered and in prod by the gto CLI."""
    return _shared(tmp_path_factory, worker_id, "foreign-example", _build()) / "proj"


@pytest.fixture(scope="session")
def example_min_dir(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The same pipeline with a model directory (model/) and an error to minimise (error.test)."""
    return _shared(tmp_path_factory, worker_id, "foreign-min-dir", _build(metric="min", model_dir=True)) / "proj"


@pytest.fixture(scope="session")
def example_csv(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The pipeline on a git-tracked data/data.csv (label, score, text, answers, views): for data fixes, drift and a service."""
    return _shared(tmp_path_factory, worker_id, "foreign-csv", _build(csv=True)) / "proj"


@pytest.fixture()
def copy_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], Path]:
    """`copy_of(project)`: a private copy of a shared foreign project and its DVC remote; cwd is set to it."""
    from selfheal.ops import sandbox

    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)

    def make(source: Path) -> Path:
        repo = tmp_path / source.name
        shutil.copytree(source, repo, symlinks=True)
        shutil.copytree(foreign.store(source), foreign.store(repo), symlinks=True)
        monkeypatch.chdir(repo)
        return repo

    return make


def snapshot(repo: Path, *outs: str) -> dict[str, str]:
    """{file: md5} of every file of the given outputs (files or directories)."""
    from selfheal.core.atomic import md5_file

    found = {}
    for out in outs:
        target = repo / out
        files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
        found.update({str(p.relative_to(repo)): md5_file(p) for p in files})
    return found
