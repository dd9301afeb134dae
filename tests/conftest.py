"""Shared fixtures: a real git + DVC project built once per test session and copied per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from selfheal.ops import sandbox

# Two pytest workers share two cores: one OpenMP thread each (inherited by the stages they start) avoids
# the oversubscription that makes gradient boosting fits several times slower. Set before sklearn loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# every git commit a test makes (sandboxes, registries) has an identity, also where the machine has none
for _key, _value in sandbox.GIT_IDENTITY.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]

# the promoted / two_versions / bad_candidate projects and `workdir`, shared by the healing tests
pytest_plugins = ["tests.heal_support", "tests.foreign_support"]

# Small but learnable data keeps a full `dvc repro` at a few seconds.
SMALL_SYNTH = {"rows": 3000, "current_rows": 800}

run = sandbox.run
set_params = sandbox.set_params


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A fresh clone of the project with small default data, after one real `dvc repro`, committed (dvc.lock
    included). Built once per run (heal_support._shared), copied for each worker: tests that run DVC in it
    never share it with the other worker."""
    from tests.heal_support import _shared

    def build(dest: Path) -> None:
        sandbox.create(dest, ROOT, synth=SMALL_SYNTH)
        sandbox.run(["dvc", "repro"], dest)
        sandbox.commit(dest, "dvc repro")

    mine = tmp_path_factory.mktemp("built") / "project"
    return shutil.copytree(_shared(tmp_path_factory, worker_id, "built", build), mine, symlinks=True)


@pytest.fixture()
def project(tmp_path: Path, built_project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the built project (git history, DVC cache and all); cwd is set to it."""
    repo = tmp_path / "project"
    shutil.copytree(built_project, repo, symlinks=True)
    monkeypatch.chdir(repo)
    for key, value in sandbox.GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    yield repo


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with slow end-to-end tests run first, so the two workers end on short tests together instead of
    one waiting for the other's long one. Whole modules move, in their own order: module fixtures are set up once."""
    slow = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module not in slow)
