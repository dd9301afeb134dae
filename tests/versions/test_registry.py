"""Model versions: GTO-format git tags with metadata, and promotion (push, production record, commit, tags)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.core.errors import SelfHealError
from selfheal.core.project import current
from selfheal.ops import sandbox
from selfheal.versions import registry
from selfheal.versions.catalog import Versions, vcs
from selfheal.versions.promote import promote
from tests.heal_support import env, model_md5, production_of, read, run, selfheal, set_max_iter


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


def test_assignment_numbers_count_per_artifact_as_gto_does(repo: Path) -> None:
    """A person's `gto assign --stage dev` takes #1: selfheal's prod assignment is #2, and gto agrees."""
    c1, _, _ = commits()
    v1 = registry.register("v0.0.1", c1, {"md5": "a" * 32})
    gto = Path(sys.executable).parent / "gto"
    run([str(gto), "assign", "model", "--version", "v0.0.1", "--stage", "dev"], repo)
    registry.assign_production(v1, "passed the gate")
    assert sorted(vcs.git("tag", "--list", "model#*").split()) == ["model#dev#1", "model#prod#2"]
    history = json.loads(run([str(gto), "history", "model", "--json"], repo).stdout)
    assert {(h["ref"], h["stage"], h["version"]) for h in history if h.get("event") == "assignment"} == {
        ("model#dev#1", "dev", "v0.0.1"), ("model#prod#2", "prod", "v0.0.1")}


@pytest.mark.slow
def test_promotion_registers_commits_pushes_and_leaves_dvc_clean(built_project: Path, workdir) -> None:
    repo = workdir(built_project)
    md5 = model_md5(repo)
    entry = promote(reason="test")
    assert production_of(repo) == {"version": "v0.0.1", "md5": md5} and entry["version"] == "v0.0.1"
    prod = Versions(current()).production_record()
    assert prod is not None and prod["md5"] == md5 and prod["version"] == "v0.0.1"
    assert {"metric_name", "metric", "alias", "promoted_at", "params", "data_md5", "model"} <= set(prod)
    assert prod["features"][0] == {"name": "MedInc", "kind": "numeric"}  # the input schema the next model must keep
    (v1,) = registry.versions()
    assert v1.commit == vcs.head() and v1.md5 == md5 and v1.meta["data_md5"] == prod["data_md5"]
    assert vcs.git("log", "-1", "--format=%s") == "dvc repro\n"  # the state was committed already: no empty commit
    assert registry.assignments()[-1].version == "v0.0.1"
    assert (repo / ".dvcstore/files/md5" / md5[:2] / md5[2:]).is_file()  # the bytes are on the DVC remote
    assert json.loads(run(["dvc", "status", "--json"], repo).stdout) == {}
    committed = set(vcs.git("ls-tree", "-r", "--name-only", v1.commit).split())  # what the version's commit holds
    assert {"dvc.lock", "params.yaml", "data/raw/housing.csv.dvc", "metrics/records/validation.json"} <= committed
    assert not vcs.git("status", "--porcelain", "--", "dvc.lock", "params.yaml", "metrics").strip()
    promote(reason="again")  # idempotent: same version, no new tag or commit
    assert [v.name for v in registry.versions()] == ["v0.0.1"] and len(registry.assignments()) == 1


@pytest.mark.slow
def test_a_failed_candidate_cannot_be_promoted(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    with pytest.raises(SelfHealError, match="failed the gate"):
        promote()
    assert production_of(repo)["version"] == "v0.0.2"


@pytest.mark.slow
def test_versions_command_marks_production(two_versions: Path, workdir) -> None:
    repo = workdir(two_versions)
    out = selfheal("versions", cwd=repo).stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("  model@v0.0.1 ") and out[1].startswith("* model@v0.0.2 ")
    rows = json.loads(selfheal("versions", "--json", cwd=repo).stdout)
    assert [r["production"] for r in rows] == [False, True] and rows[1]["metric_name"] == "r2"


def _runners(base: Path, root: Path, shared: bool = True) -> tuple[Path, Path, Path]:
    """A bare git remote of `base` and two clones of it (workspaces with the same candidate), like two CI runners;
    `shared`: both name it as the registry remote in selfheal.yaml."""
    bare = root / "registry.git"
    run(["git", "clone", "--quiet", "--bare", str(base), str(bare)], root)
    clones = []
    for name in ("a", "b"):
        clone = shutil.copytree(base, root / name, symlinks=True)
        run(["git", "remote", "add", "origin", str(bare)], clone)
        if shared:
            config = yaml.safe_load((clone / "selfheal.yaml").read_text())
            (clone / "selfheal.yaml").write_text(yaml.safe_dump({**config, "registry": {"remote": "origin"}}))
        clones.append(clone)
    return bare, clones[0], clones[1]


@pytest.mark.slow
def test_without_a_configured_registry_remote_promotion_pushes_no_tag(built_project: Path, tmp_path: Path) -> None:
    """A clone of someone's repository: `selfheal promote` tags locally and never writes into the remote."""
    bare, a, _ = _runners(built_project, tmp_path, shared=False)
    before = run(["git", "for-each-ref", "refs/tags/"], bare).stdout
    selfheal("promote", cwd=a)
    assert production_of(a)["version"] == "v0.0.1"
    assert run(["git", "for-each-ref", "refs/tags/"], bare).stdout == before == ""


@pytest.mark.slow
def test_a_shared_registry_judges_against_the_remotes_production(built_project: Path, tmp_path: Path) -> None:
    """Runner a promotes first; runner b's weaker candidate passes its own validation (a lower threshold) and its
    clone has no production yet, but b judges against the remote's production and refuses it."""
    bare, a, b = _runners(built_project, tmp_path)
    selfheal("promote", cwd=a)
    sandbox.set_params(b, model_validation={"min_accuracy_threshold": 0.1})
    set_max_iter(b, 2)
    run(["dvc", "repro", "validate"], b)
    refused = selfheal("promote", cwd=b, check=False)
    assert refused.returncode != 0 and "versus production v0.0.1" in refused.stderr, refused.stdout + refused.stderr
    assert sorted(_remote_tags(bare, "model@*")) == ["model@v0.0.1"]
    assert _remote_tags(bare, "model#prod#*") == {"model#prod#1": "v0.0.1"}


def _remote_tags(bare: Path, pattern: str) -> dict[str, str]:
    """{tag: its metadata's md5 or version} as the shared remote holds them."""
    out = run(["git", "for-each-ref", "--format=%(refname:strip=2)%00%(contents)%01", f"refs/tags/{pattern}"],
              bare).stdout
    tags = {}
    for record in filter(str.strip, out.split("\x01")):
        name, _, message = record.partition("\x00")
        meta = json.loads(message[message.find("{"):message.rfind("}") + 1])
        tags[name.strip()] = meta.get("md5") or meta.get("version")
    return tags


def _promote_at_once(*repos: Path) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen(["selfheal", "promote"], cwd=r, env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in repos]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("same_model", [True, False])
def test_two_runners_promoting_at_once_get_one_version_per_model(built_project: Path, tmp_path: Path,
                                                                 same_model: bool) -> None:
    """Two clones of one remote promote at the same moment: one v0.0.N per model, no duplicate assignment."""
    bare, a, b = _runners(built_project, tmp_path)
    if not same_model:  # b's candidate learnt from new rows: a new holdout, so the gate's allowance applies both ways
        import pandas as pd

        from selfheal.pipeline.synth import make_housing

        raw = b / "data/raw/housing.csv"
        header = list(pd.read_csv(raw, nrows=0).columns)
        with open(raw, "a", encoding="utf-8") as fh:
            fh.write(make_housing(300, seed=99)[header].to_csv(index=False, header=False))
        run(["dvc", "repro", "validate"], b)
    models = {model_md5(a), model_md5(b)}
    for done in _promote_at_once(a, b):
        assert done.returncode == 0, done.stdout + done.stderr
    versions = _remote_tags(bare, "model@*")
    assert sorted(versions.values()) == sorted(models)  # exactly one version per model's bytes
    assert sorted(versions) == [f"model@v0.0.{n}" for n in range(1, len(models) + 1)]
    assigned = _remote_tags(bare, "model#prod#*")
    assert sorted(assigned) == [f"model#prod#{n}" for n in range(1, len(models) + 1)]
    assert len(set(assigned.values())) == len(assigned)  # never the same version assigned twice
    for clone in (a, b):  # each runner's production is a version the remote holds, by its bytes
        prod = production_of(clone)
        assert versions[f"model@{prod['version']}"] == prod["md5"] in models
        (entry,) = read(clone, "monitoring/heal_log.json")
        assert entry["host"] == socket.gethostname() and entry["registry_remote"] == "origin"


def test_a_version_number_taken_on_the_remote_is_not_claimed_twice(repo: Path, tmp_path: Path) -> None:
    """Runner b has not seen a's v0.0.1 yet: its claim of the same number fails, and it now knows a's tag."""
    bare = tmp_path / "remote.git"
    vcs.git("clone", "--quiet", "--bare", str(repo), str(bare))
    vcs.git("remote", "add", "origin", str(bare))
    c1, c2, _ = commits()
    other = tmp_path / "other"
    vcs.git("clone", "--quiet", str(bare), str(other))
    assert registry.register("v0.0.1", c1, {"md5": "a" * 32}, other, remote="origin") is not None
    assert registry.register("v0.0.1", c2, {"md5": "b" * 32}, remote="origin") is None
    (seen,) = registry.versions()
    assert (seen.name, seen.commit, seen.md5) == ("v0.0.1", c1, "a" * 32)
    assert registry.register(registry.next_version([seen]), c2, {"md5": "b" * 32}, remote="origin") is not None
    assert _remote_tags(bare, "model@*") == {"model@v0.0.1": "a" * 32, "model@v0.0.2": "b" * 32}
