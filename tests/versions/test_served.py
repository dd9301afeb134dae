"""What the service serves: production's bytes as the registry pins them, never the workspace's candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.core.errors import SelfHealError
from selfheal.versions import registry, vcs
from selfheal.versions.served import production_model
from tests.servicekit import make_project, record_production, two_models


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return two_models(tmp_path_factory.mktemp("models"))


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_production_is_the_latest_assignment_not_the_workspace(tmp_path: Path, models: dict[str, Path]) -> None:
    project = make_project(tmp_path / "p", models["a"])
    for name in ("model.joblib", "model.json"):  # a candidate in the workspace
        (project / "models" / name).write_bytes((models["b"] / name).read_bytes())
    served = production_model(project)
    assert (served.version, served.md5) == ("v0.0.1", _md5(models["a"] / "model.joblib"))
    assert served.model == (models["a"] / "model.joblib").read_bytes()
    record_production(project, models["b"])
    assert production_model(project).md5 == _md5(models["b"] / "model.joblib")
    # a person's `gto assign` of the older version: production follows the latest assignment, whoever made it
    older = registry.find("v0.0.1", registry.versions(project))
    registry.assign_production(older, "a person chose it", project)
    assert production_model(project).version == "v0.0.1"


def test_bytes_come_from_the_workspace_only_when_they_are_productions(tmp_path: Path, models: dict[str, Path]) -> None:
    project = make_project(tmp_path / "p", models["a"])
    md5 = _md5(models["a"] / "model.joblib")
    vcs.cache_path(md5, project).unlink()  # a cleared cache: the workspace holds production's very bytes
    assert production_model(project).model == (models["a"] / "model.joblib").read_bytes()
    (project / "models/model.joblib").write_bytes((models["b"] / "model.joblib").read_bytes())
    with pytest.raises(SelfHealError, match=f"no copy with the recorded md5 {md5}"):
        production_model(project)  # no remote to fetch from: a clear error, nothing unpickled


def test_nothing_promoted_is_a_clear_error(tmp_path: Path) -> None:
    vcs.git("init", "-q", cwd=tmp_path)
    with pytest.raises(SelfHealError, match="no model in production yet"):
        production_model(tmp_path)
