"""Rollback: a verified checkout of a registered version's model and metrics from git + DVC, never a retrain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.versions import registry, vcs
from selfheal.versions.rollback import NothingToRestore, choose_target, rollback
from tests.heal_support import model_md5, production_of, run, selfheal

pytestmark = pytest.mark.slow


def committed(repo: Path, rev: str, rel: str) -> bytes:
    return vcs.show(rev, rel, repo)


def version_bytes(repo: Path, name: str, rel: str = "models/model.joblib") -> bytes:
    """A file of a version, independently of selfheal: from git, or by its md5 in that revision's dvc.lock."""
    tag = registry.find(name, registry.versions(repo)).tag
    if committed(repo, tag, rel) is not None:
        return committed(repo, tag, rel)
    lock = vcs.parse_lock(committed(repo, tag, "dvc.lock"))
    md5 = vcs.hashes(lock["train"])[rel]
    return (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_bytes()


def test_auto_rollback_restores_production_byte_identical(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    failed = model_md5(repo)
    entry = rollback()
    assert (repo / "models/model.joblib").read_bytes() == version_bytes(repo, "v0.0.2")
    for rel in ("metrics/validation.json", "metrics/records/validation.json", "metrics/train.json", "models/model.json",
                "models/reference.parquet", "data/split/holdout.parquet"):
        assert (repo / rel).read_bytes() == version_bytes(repo, "v0.0.2", rel), rel
    assert entry["action"] == "auto_rollback" and entry["success"] is True
    assert entry["reason"].startswith("Model r2 ") and "below threshold 0.70" in entry["reason"]
    assert entry["version_restored"] == "v0.0.2" and entry["restored_md5"] == model_md5(repo)
    assert entry["failed_md5"] == failed and entry["failed_version"] == f"candidate-{failed[:12]}"
    assert (repo / entry["failed_cache"]).is_file()  # the failed candidate is kept, and named
    assert entry["failed_remote"] == "local"  # ... and pushed to the default remote: it outlives a cleared cache
    assert (repo / ".dvcstore/files/md5" / failed[:2] / failed[2:]).read_bytes() == (repo / entry["failed_cache"]).read_bytes()
    assert audit.entries(workspace.ROLLBACK_LOG) == [entry]
    # dvc status is honest: the params still ask for the failed model (the monitor last measured v0.0.2: current)
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    assert set(status) == {"train"}, status
    assert "params.yaml" in json.dumps(status["train"])
    assert rollback() is None  # validation now passes: nothing more to do


def test_manual_rollback_by_version_and_by_seed_name(two_versions: Path, workdir,
                                                    capsys: pytest.CaptureFixture) -> None:
    repo = workdir(two_versions)
    v1 = registry.find("v0.0.1", registry.versions())
    entry = rollback(version="v0.0.1")
    said = capsys.readouterr().out
    assert "the replaced model v0.0.2 is kept in the DVC cache" in said and "failed" not in said  # a good version
    assert entry["action"] == "manual_rollback" and entry["version_restored"] == "v0.0.1"
    assert (repo / "models/model.joblib").read_bytes() == version_bytes(repo, "v0.0.1")
    assert production_of(repo)["version"] == "v0.0.1"
    assert registry.assignments()[-1].version == "v0.0.1"  # GTO sees the rollback as a stage assignment
    rollback(version=registry.find("v0.0.2", registry.versions()).alias)  # v20241120_150000-style name
    assert (repo / "models/model.joblib").read_bytes() == version_bytes(repo, "v0.0.2")
    assert [a.version for a in registry.assignments()] == ["v0.0.1", "v0.0.2", "v0.0.1", "v0.0.2"]
    assert v1.alias and v1.alias.startswith("v20")


def test_seed_flags_roll_back_from_the_current_production(two_versions: Path, workdir) -> None:
    repo = workdir(two_versions)
    assert rollback(current_metric=0.75, threshold=0.70) is None
    assert model_md5(repo) == registry.find("v0.0.2", registry.versions()).md5
    entry = rollback(current_metric=0.65, threshold=0.70)
    assert entry["reason"] == "Model accuracy 0.65 below threshold 0.70"
    assert entry["version_restored"] == "v0.0.1" and entry["failed_version"] == "v0.0.2"


def test_nothing_earlier_does_nothing_and_exits_nonzero(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    before = (repo / "models/model.joblib").read_bytes()
    with pytest.raises(NothingToRestore, match="no earlier good model version"):
        rollback(current_metric=0.5, threshold=0.7)
    assert (repo / "models/model.joblib").read_bytes() == before
    (entry,) = audit.entries(workspace.ROLLBACK_LOG)
    assert entry["success"] is False and entry["version_restored"] is None
    proc = selfheal("rollback", "--current-metric", "0.5", cwd=repo, check=False)
    assert proc.returncode == 1 and "no earlier good model version" in proc.stderr


def test_missing_cache_objects_come_from_the_dvc_remote(two_versions: Path, workdir) -> None:
    repo = workdir(two_versions)
    v1 = registry.find("v0.0.1", registry.versions())
    cached = repo / ".dvc/cache/files/md5" / v1.md5[:2] / v1.md5[2:]
    cached.unlink()
    rollback(version="v0.0.1")
    assert model_md5(repo) == v1.md5 and cached.is_file()


def test_cli_rollback_and_make_target(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    proc = selfheal("rollback", cwd=repo)
    assert "Rolling back to v0.0.2" in proc.stdout and "Successfully rolled back" in proc.stdout
    unknown = selfheal("rollback", "--version", "v7.7.7", cwd=repo, check=False)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown model version 'v7.7.7'")


def test_choose_target_walks_production_history() -> None:
    from selfheal.versions.registry import Assignment, Version

    vs = [Version(f"v0.0.{i}", f"c{i}", "", {"md5": f"m{i}"}) for i in (1, 2, 3)]
    hist = [Assignment(n, v, "", "") for n, v in enumerate(["v0.0.1", "v0.0.3", "v0.0.2"], 1)]
    assert choose_target("candidate", vs, hist).name == "v0.0.2"  # a new candidate: back to production
    assert choose_target("m2", vs, hist).name == "v0.0.3"  # production itself is bad: the one before it
    assert choose_target("m1", vs[:1], [Assignment(1, "v0.0.1", "", "")]) is None


def test_seed_flags_do_not_ping_pong_to_the_version_just_rejected(two_versions: Path, workdir) -> None:
    """A second `--current-metric 0.60` used to restore v0.0.2, the version the first one rejected."""
    repo = workdir(two_versions)
    v1, v2 = (registry.find(n, registry.versions()) for n in ("v0.0.1", "v0.0.2"))
    first = rollback(current_metric=0.65, threshold=0.70)
    assert first["version_restored"] == "v0.0.1" and first["rejected_version"] == "v0.0.2"
    proc = selfheal("rollback", "--current-metric", "0.60", "--threshold", "0.70", cwd=repo, check=False)
    assert proc.returncode == 1 and "v0.0.2 rejected by an earlier rollback" in proc.stderr
    assert model_md5(repo) == v1.md5 and production_of(repo)["version"] == "v0.0.1"
    # a person brings v0.0.2 back by name: from then on it is a rollback target again
    rollback(version="v0.0.2")
    assert rollback(current_metric=0.60, threshold=0.70)["version_restored"] == "v0.0.1"
    assert rollback(version="v0.0.2")["version_restored"] == "v0.0.2" and model_md5(repo) == v2.md5


def test_choose_target_skips_rejected_versions() -> None:
    from selfheal.versions.registry import Assignment, Version

    vs = [Version(f"v0.0.{i}", f"c{i}", "", {"md5": f"m{i}"}) for i in (1, 2, 3)]
    hist = [Assignment(n, v, "", "") for n, v in enumerate(["v0.0.1", "v0.0.2", "v0.0.3"], 1)]
    assert choose_target("m3", vs, hist, {"v0.0.2"}).name == "v0.0.1"
    assert choose_target("m1", vs, [*hist, Assignment(4, "v0.0.1", "", "")], {"v0.0.2", "v0.0.3"}) is None


def test_a_version_whose_outputs_are_unreachable_is_listed_never_restored(two_versions: Path, workdir) -> None:
    """v0.0.1's model is in no cache and no remote (pushed to a remote this clone cannot read): `versions` and
    `heal --plan` still work, and a rollback that could only go to v0.0.1 restores nothing and says so."""
    repo = workdir(two_versions)
    v1 = registry.find("v0.0.1", registry.versions())
    assert v1.md5
    for store in (repo / ".dvc/cache", repo / ".dvcstore"):
        (store / "files/md5" / v1.md5[:2] / v1.md5[2:]).unlink()
    rows = {r["version"]: r for r in json.loads(selfheal("versions", "--json", cwd=repo).stdout)}
    assert rows["v0.0.1"]["reachable"] is False and rows["v0.0.2"]["reachable"] is True
    assert isinstance(rows["v0.0.1"]["metric"], float)  # from its tag
    assert selfheal("heal", "--plan", cwd=repo).returncode == 0
    before = model_md5(repo)
    refused = selfheal("rollback", "--current-metric", "0.5", "--threshold", "0.7", cwd=repo, check=False)
    assert refused.returncode == 1 and "no earlier good model version to roll back to" in refused.stderr
    assert model_md5(repo) == before and production_of(repo)["version"] == "v0.0.2"
