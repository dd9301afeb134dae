"""`selfheal drill` on a guarded project (selfheal.yaml, kind dvc): the kinds that apply, judged again here from
the kept copies with plain git, YAML and md5, and the user's project (and DVC remote) left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from selfheal.core.errors import SelfHealError
from selfheal.core.project import parse
from selfheal.ops import faults, foreign
from selfheal.ops.drill_guarded import capabilities
from selfheal.ops.sandbox import run

SUBSET = ["candidate_below_gate", "corrupted_file_in_output_dir", "deleted_model_file", "invalid_selfheal_yaml_value"]


def _files(root: Path, skip: tuple[str, ...] = (".git", ".selfheal")) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] not in skip}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _really_production(copy: Path) -> str:
    """The latest text-classification#prod#N tag's commit, whose dvc.lock pins exactly the workspace's
    model.pkl and every file of eval/ (through the `.dir` manifest in the DVC cache). Returns the version."""
    listing = run(["git", "for-each-ref", "--format=%(refname:strip=2) %(*objectname)", "refs/tags/"], copy).stdout
    tags = dict(line.split() for line in listing.splitlines())
    _, commit = max((int(m.group(1)), c) for t, c in tags.items()
                    if (m := re.fullmatch(rf"{foreign.ARTIFACT}#prod#(\d+)", t)))
    version = next(t for t, c in tags.items() if c == commit and "@v" in t)
    lock = yaml.safe_load(run(["git", "show", f"{commit}:dvc.lock"], copy).stdout)["stages"]
    outs = {o["path"]: o["md5"] for stage in ("train", "evaluate") for o in lock[stage]["outs"]}
    assert _md5(copy / "model.pkl") == outs["model.pkl"]
    manifest = copy / ".dvc/cache/files/md5" / outs["eval"][:2] / outs["eval"][2:]
    assert _md5(manifest) == outs["eval"].removesuffix(".dir")
    entries = {e["relpath"]: e["md5"] for e in json.loads(manifest.read_text())}
    present = {p.relative_to(copy / "eval").as_posix(): _md5(p) for p in (copy / "eval").rglob("*") if p.is_file()}
    assert present == entries
    return version


@pytest.mark.slow
def test_quick_drill_on_a_guarded_project_heals_for_real_and_leaves_the_project_alone(
        example: Path, copy_of: Callable[[Path], Path], tmp_path: Path) -> None:
    repo = copy_of(example)
    run(["selfheal", "init"], repo)
    run(["git", "add", "selfheal.yaml"], repo)
    run(["git", "commit", "-q", "-m", "guard the model with selfheal"], repo)
    store = foreign.store(repo)
    before = {"files": _files(repo), "store": _files(store), "tags": run(["git", "tag"], repo).stdout,
              "head": run(["git", "rev-parse", "HEAD"], repo).stdout}
    keep = tmp_path / "drill"

    proc = run(["selfheal", "drill", "--quick", "--faults", ",".join(SUBSET), "--keep", str(keep)], repo, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n, name in enumerate(SUBSET, 1):
        assert f"drill [{n}/{len(SUBSET)}] {name}: " in proc.stdout
    card = json.loads((repo / ".selfheal/drill.json").read_text())
    assert card["project"] == {"kind": "dvc", "artifact": foreign.ARTIFACT, "name": repo.name}
    assert card["seed"] == 42 and card["revision"] == before["head"][:7]
    trials = {t["fault"]: t for t in card["trials"]}
    assert list(trials) == SUBSET
    assert {name: t["outcome"] for name, t in trials.items()} == {
        "candidate_below_gate": "healed", "corrupted_file_in_output_dir": "healed", "deleted_model_file": "healed",
        "invalid_selfheal_yaml_value": "escalated"}
    assert all(t["ok"] and t["detected"] and t["end_state_good"] for t in trials.values())
    assert "rollback" in trials["candidate_below_gate"]["action"]
    assert "gate.direction" in trials["invalid_selfheal_yaml_value"]["note"]
    for name in trials:  # every healed (and the escalated) copy: production really intact
        assert _really_production(keep / "trials" / f"{name}-1") == f"{foreign.ARTIFACT}@v1.0.0", name
    card_md = (repo / ".selfheal/drill.md").read_text()
    assert "# selfheal drill: 4/4 trials as expected" in card_md
    assert f"artifact `{foreign.ARTIFACT}`" in card_md and "Seed 42, revision" in card_md
    assert "| candidate_below_gate | healed |" in card_md
    # the user's project and its DVC remote: not a byte, tag or commit changed; new files only in .selfheal/
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert _files(repo) == before["files"] and _files(store) == before["store"]
    assert run(["git", "tag"], repo).stdout == before["tags"]
    assert run(["git", "rev-parse", "HEAD"], repo).stdout == before["head"]
    assert sorted(p.name for p in (repo / ".selfheal").iterdir()) == ["drill.json", "drill.md"]


def _config(**sections: object) -> dict:
    return {"kind": "dvc", "model": {"artifact": "m", "outs": ["model.pkl"], "stages": ["train", "evaluate"]},
            "gate": {"metrics": "eval/metrics.json", "key": "auc"}, **sections}


def _lock(root: Path) -> Path:
    lock = {"schema": "2.0", "stages": {
        "prepare": {"deps": [{"path": "data/data.tsv", "md5": "a"}], "outs": [{"path": "data/prepared", "md5": "b.dir"}]},
        "train": {"deps": [{"path": "data/prepared", "md5": "b.dir"}], "outs": [{"path": "model.pkl", "md5": "c"}]},
        "evaluate": {"outs": [{"path": "eval", "md5": "d.dir"}]}}}
    (root / "data").mkdir()
    (root / "data/data.tsv").write_text("label\ttext\n1\tx\n")
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


def test_kinds_are_enabled_by_what_the_guarded_project_offers(tmp_path: Path) -> None:
    root = _lock(tmp_path)
    bare = capabilities(parse(_config()), root)
    assert bare == {"dvc", "model", "output_dir", "tabular_data"}
    names = [f.name for f in faults.select("all", bare)]
    assert names == ["corrupted_model_file", "deleted_model_file", "candidate_below_gate",
                     "corrupted_file_in_output_dir", "deleted_file_in_output_dir", "invalid_selfheal_yaml_value"]
    # an optional section of selfheal.yaml offers itself: a kind that needs it is enabled, and only then
    full = capabilities(parse(_config(data={"deps": ["data/data.tsv"]}, service={"reload": "http://x/reload"})), root)
    assert {"data", "service"} <= full
    needy = faults.Fault("needs_service", "service", "healed", lambda p, r: "", needs=frozenset({"dvc", "service"}))
    assert needy.needs <= full and not needy.needs <= bare
    # our pipeline's kinds do not apply to a guarded project: a clear error, naming what is missing
    with pytest.raises(SelfHealError, match=r"'missing_values' does not apply to this project \(it needs: selfheal\)"):
        faults.select("missing_values", bare)
    assert [f.name for f in faults.select("model", faults.OURS)] == [
        "candidate_below_threshold", "corrupted_model_file", "deleted_model_file"]
