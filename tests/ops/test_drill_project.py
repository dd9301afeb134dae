"""`selfheal drill` on a guarded project (selfheal.yaml, kind dvc): the kinds that apply, judged again here from
the kept copies with plain git, YAML and md5, and the user's project (and DVC remote) left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from selfheal.core.errors import ConfigError, SelfHealError
from selfheal.core.project import parse
from selfheal.ops import faults
from selfheal.ops.drill_project import capabilities
from selfheal.ops.sandbox import run
from tests import foreign_project as foreign

SUBSET = ["candidate_below_gate", "candidate_from_degraded_params", "corrupted_file_in_output_dir", "deleted_model_file",
          "invalid_selfheal_yaml_value"]


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
        "candidate_below_gate": "healed", "candidate_from_degraded_params": "healed",
        "corrupted_file_in_output_dir": "healed", "deleted_model_file": "healed",
        "invalid_selfheal_yaml_value": "escalated"}
    assert all(t["ok"] and t["detected"] and t["end_state_good"] for t in trials.values())
    assert "rollback" in trials["candidate_below_gate"]["action"]
    # init proposed the drill's bad candidate from the training stage's params (n_est 30 -> 1): refused too
    assert trials["candidate_from_degraded_params"]["injected"].startswith("params.yaml:train.n_est = 1")
    assert "rollback" in trials["candidate_from_degraded_params"]["action"]
    degraded = yaml.safe_load((keep / "trials/candidate_from_degraded_params-1/params.yaml").read_text())
    assert degraded["train"]["n_est"] == 1  # the degraded params stay; production's model serves
    assert "gate.direction" in trials["invalid_selfheal_yaml_value"]["note"]
    for name in trials:  # every healed (and the escalated) copy: production really intact
        assert _really_production(keep / "trials" / f"{name}-1") == f"{foreign.ARTIFACT}@v1.0.0", name
    card_md = (repo / ".selfheal/drill.md").read_text()
    assert "# selfheal drill: 5/5 trials as expected" in card_md
    # what could not be drilled here is listed with what it needs (no data.fix CSV, no drift, no service)
    assert card["not_drilled"]["drift_most_columns"] == "drift, drift_columns"
    assert "service_crash" in card["not_drilled"] and "candidate_below_gate" not in card["not_drilled"]
    assert "## Not drilled on this project" in card_md and "- service_crash: needs service_start" in card_md
    assert f"artifact `{foreign.ARTIFACT}`" in card_md and "Seed 42, revision" in card_md
    assert "| candidate_below_gate | healed |" in card_md
    # the user's project and its DVC remote: not a byte, tag or commit changed; new files only in .selfheal/
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert _files(repo) == before["files"] and _files(store) == before["store"]
    assert run(["git", "tag"], repo).stdout == before["tags"]
    assert run(["git", "rev-parse", "HEAD"], repo).stdout == before["head"]
    assert sorted(p.name for p in (repo / ".selfheal").iterdir()) == ["drill.json", "drill.md"]


SECTIONS = ["numbers_as_text", "drift_most_columns", "service_crash"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _guard_every_section(repo: Path) -> str:
    """`selfheal init`, then data.target, drift (three numeric columns compared), a retrain command folding the
    batch in, and the tiny service on a free port; committed with the current batch. Returns the health URL."""
    foreign.write_csv(repo / "data/current.csv", 200, seed=5)
    run(["selfheal", "init"], repo)
    url = f"http://127.0.0.1:{_free_port()}/health"
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["data"]["target"] = "label"
    config["drift"] = {"reference": "data/data.csv", "current": "data/current.csv",
                       "columns": ["score", "answers", "views"]}
    config["retrain"] = {"command": "python src/fold.py data/current.csv data/data.csv && dvc repro -q evaluate"}
    config["service"] = {"health": url, "start": f"{sys.executable} src/serve.py {{port}}",
                         "startup_timeout_seconds": 15}
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run(["git", "add", "selfheal.yaml", "data/current.csv"], repo)
    run(["git", "commit", "-q", "-m", "guard data, drift and the service"], repo)
    return url


def _in(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cwd"]):
        if proc.info["cwd"] and Path(proc.info["cwd"]).is_relative_to(folder) and proc.pid != os.getpid():
            found.append(proc)
    return found


def test_a_project_that_does_not_heal_cleanly_is_not_drilled_and_heal_s_own_words_say_why(
        example: Path, copy_of: Callable[[Path], Path]) -> None:
    repo = copy_of(example)
    run(["selfheal", "init"], repo)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["service"] = {"health": f"http://127.0.0.1:{_free_port()}/health",
                         "start": f"{sys.executable} -c \"raise SystemExit('no model server here')\"",
                         "startup_timeout_seconds": 2}
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run(["selfheal", "drill", "--quick", "--faults", "deleted_model_file"], repo, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith("error: drill: the baseline heal on a fresh copy did not end healthy (exit 1)"), error
    said, _, stderr = error.split("It said: ", 1)[1].partition("; on stderr: ")
    assert said.split(" | ")[-1] == "heal: needs attention", said  # whole lines of heal's output, the last last
    assert stderr.endswith("no model server here"), stderr
    assert not list(repo.glob(".selfheal/drill*"))  # no scorecard of a drill that did not run



@pytest.mark.slow
def test_quick_drill_drills_the_data_drift_and_service_sections(
        example_csv: Path, copy_of: Callable[[Path], Path], tmp_path: Path) -> None:
    repo = copy_of(example_csv)
    url = _guard_every_section(repo)
    rows = len(pd.read_csv(repo / "data/data.csv"))
    before = {"files": _files(repo), "head": run(["git", "rev-parse", "HEAD"], repo).stdout}
    keep = tmp_path / "drill"

    proc = run(["selfheal", "drill", "--quick", "--faults", ",".join(SECTIONS), "--keep", str(keep)], repo,
               check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "its service answered" in proc.stdout  # the baseline started the configured service
    trials = {t["fault"]: t for t in json.loads((repo / ".selfheal/drill.json").read_text())["trials"]}
    assert {name: t["outcome"] for name, t in trials.items()} == {
        "numbers_as_text": "healed", "drift_most_columns": "healed", "service_crash": "healed"}
    assert all(t["ok"] and t["detected"] and t["end_state_good"] for t in trials.values()), {
        n: (t["detected"], t["end_state"], t["note"]) for n, t in trials.items()}
    card = (repo / ".selfheal/drill.md").read_text()
    assert "Drift response (drift detected to the retrained candidate judged by the gate): " in card
    assert "x the cold" not in card and "service crash in watch mode" in card
    # the data: read back with pandas, no text numbers, missing values or duplicates; the faulty bytes backed up;
    # the candidate was made from the fixed file, and production's bytes are a registered version's
    copy = keep / "trials/numbers_as_text-1"
    fixed = pd.read_csv(copy / "data/data.csv")
    assert not fixed.isna().any().any() and not fixed.duplicated().any() and len(fixed) == rows
    assert all(pd.api.types.is_numeric_dtype(fixed[c]) for c in ("score", "answers", "views"))
    text = pd.read_csv(copy / "data/data.csv", dtype=str, keep_default_na=False)
    assert all((text[c] == text[c].str.strip()).all() for c in ("score", "answers", "views"))
    backups = [f for f in (copy / ".selfheal/backups").rglob("data.csv")]
    assert len(backups) == 1
    faulty = pd.read_csv(backups[0], dtype=str, keep_default_na=False)
    assert any(pd.to_numeric(faulty[c], errors="coerce").isna().any() or (faulty[c] != faulty[c].str.strip()).any()
               for c in ("score", "answers", "views"))
    lock = yaml.safe_load((copy / "dvc.lock").read_text())["stages"]
    assert next(d["md5"] for d in lock["prepare"]["deps"] if d["path"] == "data/data.csv") == _md5(copy / "data/data.csv")
    assert _really_production(copy) in (f"{foreign.ARTIFACT}@v1.0.0", f"{foreign.ARTIFACT}@v1.0.1")
    # drift in two of the three compared columns: the retrain command folded the 200 rows in, the gate judged
    copy = keep / "trials/drift_most_columns-1"
    assert len(pd.read_csv(copy / "data/data.csv")) == rows + 200
    assert _really_production(copy) in (f"{foreign.ARTIFACT}@v1.0.0", f"{foreign.ARTIFACT}@v1.0.1")
    # the service: killed, back within the watch deadline, on a port of the drill's own (never the user's)
    assert trials["service_crash"]["time_to_recover_s"] < 30 and trials["service_crash"]["action"] == "recover"
    drilled = yaml.safe_load((keep / "trials/service_crash-1/selfheal.yaml").read_text())["service"]["health"]
    assert drilled != url and drilled.endswith("/health")
    # nothing left running: no service, no watcher; the user's project not touched beyond .selfheal/
    assert not _in(keep) and not _in(repo)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert _files(repo) == before["files"] and run(["git", "rev-parse", "HEAD"], repo).stdout == before["head"]


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


def _tables(root: Path) -> None:
    """A CSV to fix, and a reference and current batch with three numeric columns (and text) to compare."""
    rows = "label,score,text,answers,views\n" + "".join(f"{i % 2},{i % 10},q {i},{i % 5},{10 + i}\n" for i in range(40))
    for name in ("fix.csv", "reference.csv", "current.csv"):
        (root / "data" / name).write_text(rows)


def test_kinds_are_enabled_by_what_the_guarded_project_offers(tmp_path: Path) -> None:
    root = _lock(tmp_path)
    _tables(root)
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
    # ... but the section's own kinds need what they inject into: a CSV under data.fix, compared numeric columns
    # where 3/4 shifted reach drift_threshold and one does not, a health URL and a start command
    assert not {"data_fix_csv", "service_start"} & full and not {"data", "service"} & {f.group for f in
                                                                                       faults.select("all", full)}
    sections = {"data": {"fix": ["data/fix.csv"], "target": "label"},
                "drift": {"reference": "data/reference.csv", "current": "data/current.csv", "drift_threshold": 0.5},
                "service": {"health": "http://127.0.0.1:9/health", "start": "python serve.py {port}"}}
    every = capabilities(parse(_config(**sections)), root)
    assert {"data", "data_fix_csv", "drift", "drift_columns", "service", "service_start"} <= every
    added = [f.name for f in faults.select("all", every) if f.name not in names]
    assert added == ["missing_values", "duplicates", "numbers_as_text", "service_crash", "service_hang",
                     "drift_most_columns", "drift_one_column"]
    assert all(f.needs <= every and "selfheal" not in f.needs for f in faults.select("data,drift,service", every))
    # one column of the four compared (score, text, answers, views) reaching the threshold: drift_one_column's
    # left_alone would be wrong, so no drift kinds; nor with a single numeric column compared
    # drift judged against the baseline batch's own: with score already drifted in the current batch, shifting
    # one more column reaches the threshold (2 of 4), so drift_one_column's left_alone could not hold
    shifted = "label,score,text,answers,views\n" + "".join(f"{i % 2},{100 + i},q {i},{i % 5},{10 + i}\n"
                                                           for i in range(40))
    (root / "data/current.csv").write_text(shifted)
    assert "drift_columns" not in capabilities(parse(_config(**sections)), root)
    _tables(root)
    low = dict(sections, drift={**sections["drift"], "drift_threshold": 0.25})
    assert "drift_columns" not in capabilities(parse(_config(**low)), root)
    one = dict(sections, drift={**sections["drift"], "columns": ["score", "text"]})
    assert "drift_columns" not in capabilities(parse(_config(**one)), root)
    # our pipeline's kinds do not apply to a guarded project: a clear error, naming what is missing
    with pytest.raises(SelfHealError, match=r"'outliers' does not apply to this project \(it needs: selfheal\)"):
        faults.select("outliers", bare)
    with pytest.raises(SelfHealError, match=r"'missing_values' does not apply to this project "
                                            r"\(it needs: data_fix_csv\)"):
        faults.select("missing_values", bare)
    # a bad candidate on any project, whatever its data's format: drill.degrade names params that make one
    (root / "data/data.tsv").unlink()
    (root / "data/data.xml").write_text("<posts><row Id='1' Body='x'/></posts>\n")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["prepare"]["deps"] = [{"path": "data/data.xml", "md5": "a"}]
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    degrade = capabilities(parse(_config(drill={"degrade": {"train.n_est": 1}})), root)
    assert "tabular_data" not in degrade and "drill_degrade" in degrade
    assert [f.name for f in faults.select("model", degrade)] == [
        "corrupted_model_file", "deleted_model_file", "candidate_from_degraded_params", "corrupted_file_in_output_dir",
        "deleted_file_in_output_dir"]
    assert faults.skipped(degrade)["candidate_below_gate"] == "tabular_data"
    with pytest.raises(ConfigError, match=r"drill\.degrade"):
        parse(_config(drill={"degrade": {"conf.json:epochs": 1}}))
    assert faults.BY_NAME["drift_most_columns"].needs == {"selfheal"}  # a name of both kinds: ours, for our tests
    assert [f.name for f in faults.select("model", faults.OURS)] == [
        "candidate_below_threshold", "corrupted_model_file", "deleted_model_file"]
