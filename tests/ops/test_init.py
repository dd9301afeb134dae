"""`selfheal init` on DVC repositories as people write them, then `heal` promoting a good candidate and rolling
back a bad one: no `artifacts:` and uncached stage metrics; a templated dvc.yaml (vars, ${...}, foreach); two
models in one pipeline. The stages are small real scripts (standard library only): a "model" is a pickle of
its params, its score is a params value, so a test chooses good and bad candidates exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from selfheal.ops import sandbox
from tests.heal_support import env

pytestmark = pytest.mark.slow

TRAIN = """import os, pickle, sys, yaml
name = sys.argv[1]
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
quality = yaml.safe_load(open("params.yaml"))["train"][name]
open(sys.argv[2], "wb").write(pickle.dumps({"name": name, "quality": quality, "rows": len(open("data/raw.csv").read())}))
"""
EVALUATE = """import json, os, pickle, sys
model = pickle.loads(open(sys.argv[1], "rb").read())
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
json.dump({"test": {"acc": model["quality"]}}, open(sys.argv[2], "w"))
"""


def _stage(name: str, model: str, metrics: str) -> dict:
    return {
        f"train_{name}": {"cmd": f"python src/train.py {name} {model}", "deps": ["src/train.py", "data/raw.csv"],
                          "params": [f"train.{name}"], "outs": [model]},
        f"evaluate_{name}": {"cmd": f"python src/evaluate.py {model} {metrics}", "deps": ["src/evaluate.py", model],
                             "metrics": [{metrics: {"cache": False}}]},
    }


PLAIN = {"stages": _stage("rf", "models/rf_model.pkl", "eval/metrics.json")}
TEMPLATED = {
    "vars": ["params.yaml"],
    "stages": {
        "train": {"foreach": "${models}", "do": {"cmd": "python src/train.py ${item} models/${item}.pkl",
                                                "deps": ["src/train.py", "${data.raw}"], "params": ["train"],
                                                "outs": ["models/${item}.pkl"]}},
        "evaluate": {"cmd": "python src/evaluate.py models/rf.pkl ${eval.metrics}",
                     "deps": ["src/evaluate.py", "models/rf.pkl"], "metrics": [{"${eval.metrics}": {"cache": False}}]},
    },
}
IN_SRC = {"stages": {  # each stage runs in src/ (`wdir`): dvc.lock writes its paths relative to src/
    "train": {"wdir": "src", "cmd": "cd .. && python src/train.py rf models/rf.pkl",
              "deps": ["train.py", "../data/raw.csv"], "params": [{"../params.yaml": ["train.rf"]}],
              "outs": ["../models/rf.pkl"]},
    "evaluate": {"wdir": "src", "cmd": "cd .. && python src/evaluate.py models/rf.pkl eval/metrics.json",
                 "deps": ["evaluate.py", "../models/rf.pkl"], "metrics": [{"../eval/metrics.json": {"cache": False}}]},
}}
TWO_MODELS = {"stages": {**_stage("rf", "models/rf.pkl", "eval/rf.json"), **_stage("nn", "models/nn.pkl", "eval/nn.json")}}


def _repo(root: Path, dvc_yaml: dict, folder: str = "") -> Path:
    """A git + DVC repository with the pipeline run and committed, as a user has it before `selfheal init`; with
    `folder`, the pipeline lives in that folder of the repository (git and DVC at its top). Returns the
    pipeline's folder."""
    root.mkdir()
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"]):
        sandbox.run(cmd, root)
    where = root / folder
    (where / "src").mkdir(parents=True)
    (where / "data").mkdir()
    (where / "src/train.py").write_text(TRAIN)
    (where / "src/evaluate.py").write_text(EVALUATE)
    (where / "data/raw.csv").write_text("x,y\n1,2\n3,4\n")
    params = {"train": {"rf": 0.85, "nn": 0.85, "fit": {"epochs": 5}}, "models": ["rf", "nn"], "data": {"raw": "data/raw.csv"},
              "eval": {"metrics": "eval/metrics.json"}}
    (where / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (where / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    sandbox.run(["dvc", "repro", "-q"], where)
    sandbox.commit(root, "the pipeline")
    return where


def _run(*args: str, cwd: Path, check: bool = True):
    return sandbox.run(list(args), cwd, check, extra_env={k: v for k, v in env().items() if k == "SELFHEAL_MLFLOW"})


def _candidate(repo: Path, name: str, quality: float) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"][name] = quality
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run("dvc", "repro", "-q", cwd=repo)


def _guard_then_promote_and_roll_back(repo: Path, model: str, name: str) -> None:
    """The gate's bound set (the one hand edit), then: the first heal promotes what is there, a better
    candidate is promoted, a much worse one is rolled back to the better one's exact bytes."""
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["gate"]["bound"] = 0.8
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "Promoted" in _run("selfheal", "heal", cwd=repo).stdout
    _candidate(repo, name, 0.9)
    assert "Promoted" in _run("selfheal", "heal", cwd=repo).stdout
    good = (repo / model).read_bytes()
    _candidate(repo, name, 0.5)
    rolled = _run("selfheal", "heal", cwd=repo)
    assert "Rolling back to v0.0.2" in rolled.stdout and (repo / model).read_bytes() == good
    rows = json.loads(_run("selfheal", "versions", "--json", cwd=repo).stdout)
    assert [(r["version"], r["metric"], r["production"]) for r in rows] == [("v0.0.1", 0.85, False),
                                                                            ("v0.0.2", 0.9, True)]


def test_a_model_without_artifacts_and_uncached_stage_metrics_is_inferred(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "plain", PLAIN)
    out = _run("selfheal", "init", "--add-artifact", cwd=repo).stdout
    assert "inferred model rf_model at models/rf_model.pkl" in out and "added artifacts: rf_model" in out
    assert "drill.degrade is not set" in out  # train.rf is a quality, no size param to make a weak candidate
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"] == {"artifact": "rf_model", "outs": ["models/rf_model.pkl"],
                               "stages": ["train_rf", "evaluate_rf"]}
    assert (config["gate"]["metrics"], config["gate"]["key"]) == ("eval/metrics.json", "test.acc")
    assert yaml.safe_load((repo / "dvc.yaml").read_text())["artifacts"] == {
        "rf_model": {"path": "models/rf_model.pkl", "type": "model"}}  # DVC's and GTO's tools see it too
    sandbox.commit(repo, "selfheal init")
    _guard_then_promote_and_roll_back(repo, "models/rf_model.pkl", "rf")


def test_a_templated_dvc_yaml_is_read_through_dvc(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "templated", TEMPLATED)
    out = _run("selfheal", "init", cwd=repo).stdout
    assert "inferred model rf at models/rf.pkl" in out
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"]["stages"] == ["train@rf", "evaluate"] and config["gate"]["metrics"] == "eval/metrics.json"
    assert config["data"] == {"fix": ["data/raw.csv"]}  # ${data.raw}, resolved
    assert config["drill"] == {"degrade": {"train.fit.epochs": 1}}  # found inside the group the stage declares
    sandbox.commit(repo, "selfheal init")
    _guard_then_promote_and_roll_back(repo, "models/rf.pkl", "rf")


def test_stages_that_run_in_a_folder_of_their_own_are_guarded(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "in-src", IN_SRC)
    _run("selfheal", "init", cwd=repo)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"]["outs"] == ["models/rf.pkl"] and config["gate"]["metrics"] == "eval/metrics.json"
    sandbox.commit(repo, "selfheal init")
    _guard_then_promote_and_roll_back(repo, "models/rf.pkl", "rf")
    # the rollback wrote dvc.lock's entries back as DVC writes them (relative to src/), and DVC finds the restored
    # outputs in place (only the refused candidate's params edit, left to its author, differs)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert [out["path"] for out in lock["train"]["outs"]] == ["../models/rf.pkl"]
    assert _run("git", "status", "--porcelain", "--", "eval", cwd=repo).stdout == ""  # committed when promoted
    status = json.loads(_run("dvc", "status", "--json", cwd=repo).stdout)
    assert status == {"train": [{"changed deps": {"params.yaml": {"train.rf": "modified"}}}]}, status


def test_two_models_are_listed_and_one_is_chosen(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "two", TWO_MODELS)
    refused = _run("selfheal", "init", cwd=repo, check=False)
    assert refused.returncode == 1 and "several models: rf (models/rf.pkl), nn (models/nn.pkl)" in refused.stderr
    _run("selfheal", "init", "--artifact", "nn", cwd=repo)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"] == {"artifact": "nn", "outs": ["models/nn.pkl"], "stages": ["train_nn", "evaluate_nn"]}
    assert config["gate"]["metrics"] == "eval/nn.json"
    sandbox.commit(repo, "selfheal init")
    _guard_then_promote_and_roll_back(repo, "models/nn.pkl", "nn")


def test_two_models_are_guarded_side_by_side_with_a_file_each(tmp_path: Path) -> None:
    """SELFHEAL_PROJECT names each model's file: each has its own records and tags; a bad nn candidate is
    rolled back while rf's production is untouched."""
    repo = _repo(tmp_path / "two", TWO_MODELS)
    for name in ("rf", "nn"):
        sandbox.run(["selfheal", "init", "--artifact", name], repo, extra_env={"SELFHEAL_PROJECT": f"selfheal.{name}.yaml"})
        assert yaml.safe_load((repo / f"selfheal.{name}.yaml").read_text())["records"] == f".selfheal/{name}"
    assert (repo / ".gitignore").read_text().count(".selfheal") == 1 and not (repo / "selfheal.yaml").exists()
    sandbox.commit(repo, "selfheal init, one file per model")
    for name in ("rf", "nn"):
        sandbox.run(["selfheal", "heal"], repo, extra_env={"SELFHEAL_PROJECT": f"selfheal.{name}.yaml"})
    assert sorted(sandbox.run(["git", "tag"], repo).stdout.split()) == ["nn#prod#1", "nn@v0.0.1", "rf#prod#1",
                                                                        "rf@v0.0.1"]
    good = (repo / "models/nn.pkl").read_bytes()
    _candidate(repo, "nn", 0.5)
    rolled = sandbox.run(["selfheal", "heal"], repo, extra_env={"SELFHEAL_PROJECT": "selfheal.nn.yaml"})
    assert "Rolling back to v0.0.1" in rolled.stdout and (repo / "models/nn.pkl").read_bytes() == good
    assert json.loads((repo / ".selfheal/nn/rollback_log.json").read_text())[-1]["version_restored"] == "v0.0.1"
    rf = sandbox.run(["selfheal", "heal", "--plan"], repo, extra_env={"SELFHEAL_PROJECT": "selfheal.rf.yaml"})
    assert "rf@v0.0.1 is prod" in rf.stdout


def test_a_pipeline_in_a_folder_of_the_repository_is_guarded_with_gtos_names(tmp_path: Path) -> None:
    """dvc.yaml in pipelines/rf (git and DVC at the top): init run there reads it through DVC, names the model
    as GTO does (`pipelines/rf:rf_model`, tags `pipelines/rf=rf_model@...`), and heal promotes and rolls back."""
    repo = _repo(tmp_path / "mono", {"artifacts": {"rf_model": {"path": "models/rf_model.pkl", "type": "model"}},
                                     **PLAIN}, folder="pipelines/rf")
    top = _run("selfheal", "init", cwd=repo.parents[1], check=False)  # at the repository's top: where to go
    assert top.returncode == 1 and "no dvc.yaml here, but in pipelines/rf/: run `selfheal init` in the folder" \
        in top.stderr
    out = _run("selfheal", "init", cwd=repo).stdout
    assert "found model artifact pipelines/rf:rf_model at models/rf_model.pkl" in out
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    assert config["model"]["artifact"] == "pipelines/rf:rf_model"
    assert config["model"]["stages"] == ["train_rf", "evaluate_rf"] and config["data"] == {"fix": ["data/raw.csv"]}
    sandbox.commit(repo, "selfheal init")
    _guard_then_promote_and_roll_back(repo, "models/rf_model.pkl", "rf")
    assert sorted(sandbox.run(["git", "tag"], repo).stdout.split()) == [
        "pipelines/rf=rf_model#prod#1", "pipelines/rf=rf_model#prod#2", "pipelines/rf=rf_model@v0.0.1",
        "pipelines/rf=rf_model@v0.0.2"]  # the refused candidate: rolled back, never registered
    shown = json.loads(_run("gto", "show", "--json", cwd=repo.parents[1]).stdout)
    assert shown["pipelines/rf:rf_model"]["version"] == "v0.0.2"
    assert shown["pipelines/rf:rf_model"]["stage"] == {"prod": "v0.0.2"}
    drilled = _run("selfheal", "drill", cwd=repo, check=False)  # not there yet: said, nothing run
    assert drilled.returncode == 2 and "sits in pipelines/rf/ of its repository" in drilled.stderr
