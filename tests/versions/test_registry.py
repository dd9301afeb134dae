"""Model versions: GTO-format git tags with metadata, and promotion (push, production record, commit, tags)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import registry, vcs
from selfheal.versions.promote import promote
from tests.heal_support import model_md5, read, run, selfheal


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plain git repo with three commits c1..c3 (no DVC needed to test the tags)."""
    from selfheal.ops.sandbox import GIT_IDENTITY

    for k, v in GIT_IDENTITY.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    vcs.git("init", "-q", "-b", "main")
    for n in (1, 2, 3):
        Path("f.txt").write_text(str(n))
        vcs.git("add", "f.txt")
        vcs.git("commit", "-q", "-m", f"c{n}")
    return tmp_path


def commits() -> list[str]:
    return vcs.git("rev-list", "--reverse", "HEAD").split()


def test_register_list_find(repo: Path) -> None:
    c1, c2, _ = commits()
    assert registry.versions() == [] and registry.next_version([]) == "v0.0.1"
    registry.register("v0.0.1", c1, {"md5": "a" * 32, "alias": "v20241120_150000", "metric": 0.8})
    registry.register("v0.0.2", c2, {"md5": "b" * 32, "alias": "v20241125_120000", "metric": 0.9})
    known = registry.versions()
    assert [(v.name, v.commit, v.md5) for v in known] == [("v0.0.1", c1, "a" * 32), ("v0.0.2", c2, "b" * 32)]
    assert known[0].meta["metric"] == 0.8 and known[0].tag == "model@v0.0.1"
    for ref in ("v0.0.1", "0.0.1", "model@v0.0.1", "v20241120_150000", "aaaaaaa"):
        assert registry.find(ref, known).name == "v0.0.1", ref
    with pytest.raises(SelfHealError, match=r"unknown model version 'v9\.9\.9'.*v0\.0\.1 \(v20241120_150000\)"):
        registry.find("v9.9.9", known)
    assert registry.by_md5("b" * 32, known).name == "v0.0.2" and registry.by_md5("c" * 32, known) is None
    assert registry.next_version(known) == "v0.0.3"


def test_semver_order_and_foreign_tags(repo: Path) -> None:
    c1, c2, c3 = commits()
    registry.register("v0.0.10", c3, {})
    registry.register("v0.0.9", c2, {})
    vcs.git("tag", "release-1", c1)  # not ours: ignored
    vcs.git("tag", "-a", "model@v0.0.2", "-m", "Registering artifact model version v0.0.2", c1)  # plain `gto register`
    assert [v.name for v in registry.versions()] == ["v0.0.2", "v0.0.9", "v0.0.10"]
    assert registry.versions()[0].meta == {}


def test_register_is_idempotent_but_never_moves_a_version(repo: Path) -> None:
    c1, c2, _ = commits()
    registry.register("v0.0.1", c1, {"md5": "a" * 32})
    registry.register("v0.0.1", c1, {"md5": "a" * 32})
    assert len(registry.versions()) == 1
    with pytest.raises(SelfHealError, match="already tags another commit"):
        registry.register("v0.0.1", c2, {})


def test_production_assignments_are_gto_stage_tags(repo: Path) -> None:
    c1, c2, _ = commits()
    v1 = registry.register("v0.0.1", c1, {"md5": "a" * 32})
    v2 = registry.register("v0.0.2", c2, {"md5": "b" * 32})
    registry.assign_production(v1, "first")
    registry.assign_production(v1, "again")  # already production: no new tag
    registry.assign_production(v2, "better")
    registry.assign_production(v1, "rollback")
    history = registry.assignments()
    assert [(a.counter, a.version) for a in history] == [(1, "v0.0.1"), (2, "v0.0.2"), (3, "v0.0.1")]
    assert history[-1].meta["reason"] == "rollback" and history[-1].commit == c1
    shown = json.loads(subprocess.run(["gto", "show", "model", "--json"], capture_output=True, text=True,
                                      env=vcs.env(), check=True).stdout)
    assert {(v["version"], tuple(s["stage"] for s in v["stages"])) for v in shown} == {
        ("v0.0.1", ("prod",)), ("v0.0.2", ())}


def test_production_record(tmp_path: Path) -> None:
    path = tmp_path / "production.json"
    assert workspace.read_production(path) is None
    path.write_bytes((Path(__file__).resolve().parents[2] / workspace.PRODUCTION).read_bytes())
    assert workspace.read_production(path) is None  # the committed initial record: version null
    path.write_text('{"version": "v0.0.1", "md5": "x"}')
    assert workspace.read_production(path)["md5"] == "x"
    path.write_text("{broken")
    with pytest.raises(SelfHealError, match="not valid JSON"):
        workspace.read_production(path)


@pytest.mark.slow
def test_promotion_registers_commits_pushes_and_leaves_dvc_clean(built_project: Path, workdir) -> None:
    repo = workdir(built_project)
    md5 = model_md5(repo)
    entry = promote(reason="test")
    prod = read(repo, "models/production.json")
    assert entry["version"] == prod["version"] == "v0.0.1" and prod["md5"] == md5
    assert {"metric_name", "metric", "alias", "promoted_at", "params", "data_md5", "model"} <= set(prod)
    assert prod["features"][0] == {"name": "MedInc", "kind": "numeric"}  # the input schema the next model must keep
    (v1,) = registry.versions()
    assert v1.commit == vcs.head() and v1.md5 == md5 and v1.meta["data_md5"] == prod["data_md5"]
    assert vcs.git("log", "-1", "--format=%s").startswith("Promote model v0.0.1 to production: r2 ")
    assert registry.assignments()[-1].version == "v0.0.1"
    assert (repo / ".dvcstore/files/md5" / md5[:2] / md5[2:]).is_file()  # the bytes are on the DVC remote
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    committed = set(vcs.git("show", "--name-only", "--format=", "HEAD").split())
    assert {"dvc.lock", "models/production.json"} <= committed
    assert not vcs.git("status", "--porcelain", "--", "dvc.lock", "params.yaml", "metrics").strip()
    promote(reason="again")  # idempotent: same version, no new tag or commit
    assert [v.name for v in registry.versions()] == ["v0.0.1"] and len(registry.assignments()) == 1


@pytest.mark.slow
def test_a_failed_candidate_cannot_be_promoted(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    with pytest.raises(SelfHealError, match="failed validation"):
        promote()
    assert read(repo, "models/production.json")["version"] == "v0.0.2"


@pytest.mark.slow
def test_versions_command_marks_production(two_versions: Path, workdir) -> None:
    repo = workdir(two_versions)
    out = selfheal("versions", cwd=repo).stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("  v0.0.1") and out[1].startswith("* v0.0.2")
    rows = json.loads(selfheal("versions", "--json", cwd=repo).stdout)
    assert [r["production"] for r in rows] == [False, True] and rows[1]["metric_name"] == "r2"
