"""selfheal.yaml: validation with one-line errors, our own pipeline's file, and `selfheal init` refusing clearly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.core import project, workspace
from selfheal.core.config import Params
from selfheal.core.errors import ConfigError
from selfheal.versions import registry

ROOT = Path(__file__).resolve().parents[2]
SELFHEAL = [str(Path(sys.executable).parent / "selfheal")]  # this venv's command, whatever PATH says


def test_our_pipeline_selfheal_yaml_is_the_layout_selfheal_assumes_without_one() -> None:
    ours = project.load(ROOT / "selfheal.yaml")
    defaults = Params().model_validation
    assert ours == project.parse(project.OURS) == project.current(ROOT)
    assert ours.kind == "selfheal" and ours.service_recovery == Params().service_recovery
    assert ours.model.artifact == registry.ARTIFACT and ours.gate.stage == registry.STAGE
    assert ours.model.outs == [str(workspace.MODEL)] and ours.model.stages == ["train", "validate"]
    assert ours.gate.metrics == str(workspace.VALIDATION) and ours.gate.direction == "max"
    assert ours.gate.max_relative_change == defaults.max_relative_drop


@pytest.mark.parametrize(("change", "expected"), [
    ({"gate": {"metrics": "m.json", "key": "a.b", "direction": "up"}}, "selfheal.yaml: gate.direction: Input should be 'max' or 'min'"),
    ({"gate": {"metrics": "m.json", "key": "a", "treshold": 1}}, "selfheal.yaml: gate.treshold: unknown key"),
    ({"model": {"artifact": "Model!", "outs": ["m"], "stages": ["t"]}}, "selfheal.yaml: model.artifact: String should match"),
])
def test_a_bad_selfheal_yaml_is_one_line_naming_the_key(tmp_path: Path, change: dict, expected: str) -> None:
    raw = {"model": {"artifact": "m", "outs": ["m.pkl"], "stages": ["train"]},
           "gate": {"metrics": "m.json", "key": "a"}, **change}
    (tmp_path / "selfheal.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        project.load(tmp_path / "selfheal.yaml")
    assert str(err.value).startswith(str(tmp_path / expected)) and "\n" not in str(err.value)


def test_dig_reads_nested_keys_and_says_what_is_missing() -> None:
    doc = {"avg_prec": {"test": 0.9, "note": "x"}}
    assert project.dig(doc, "avg_prec.test", "m.json") == 0.9
    with pytest.raises(Exception, match=re.escape("no key 'avg_prec.train' (missing 'train')")):
        project.dig(doc, "avg_prec.train", "m.json")
    assert project.numeric_keys({"a": {"b": 1, "c": "x", "d": True}, "e": 2.5}) == {"a.b": 1.0, "e": 2.5}


def _repo(path: Path, dvc_yaml: dict | None, metrics: dict | None = None) -> Path:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    if dvc_yaml is not None:
        (path / ".dvc").mkdir()
        (path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


TRAIN = {"train": {"cmd": "python train.py", "outs": ["model.pkl"], "metrics": ["metrics.json"]}}
MODEL = {"clf": {"path": "model.pkl", "type": "model"}}


@pytest.mark.parametrize(("dvc_yaml", "metrics", "says"), [
    (None, None, "no DVC pipeline here (.dvc/ and dvc.yaml are needed): run `dvc init`"),
    ({"stages": {"train": {"cmd": "x", "outs": ["weights.out"], "metrics": ["metrics.json"]}}}, {"acc": 0.9},
     "dvc.yaml has no artifact of type model, and no stage output that feeds the metrics looks like one"),
    ({"artifacts": MODEL, "stages": TRAIN}, {"acc": "high"}, "no numeric metric found (metrics files: metrics.json)"),
    ({"artifacts": MODEL, "stages": {"train": {"cmd": "x", "outs": ["other.pkl"]}}}, None, "dvc.yaml: no stage has model.pkl"),
])
def test_init_refuses_a_repo_it_cannot_guard_and_says_what_to_add(tmp_path: Path, dvc_yaml: dict | None,
                                                                    metrics: dict | None, says: str) -> None:
    repo = _repo(tmp_path / "repo", dvc_yaml, metrics)
    proc = subprocess.run([*SELFHEAL, "init"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {says}")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (repo / "selfheal.yaml").exists()


def test_a_guarded_projects_params_yaml_is_never_parsed(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", {"artifacts": MODEL, "stages": TRAIN}, {"acc": 0.9})
    (repo / "params.yaml").write_text(yaml.safe_dump({"train": {"n_est": 50}, "prepare": {"split": 0.2}}))
    assert subprocess.run([*SELFHEAL, "init"], cwd=repo, capture_output=True).returncode == 0
    plan = subprocess.run([*SELFHEAL, "heal", "--plan"], cwd=repo, capture_output=True, text=True)
    assert plan.returncode == 0 and "no pipeline outputs yet: `dvc repro` builds a candidate" in plan.stdout
    other = subprocess.run([*SELFHEAL, "fix-data"], cwd=repo, capture_output=True, text=True)
    assert other.returncode == 2 and "guarded through selfheal.yaml" in other.stderr and "unknown key" not in other.stderr


def test_init_asks_only_when_interactive_and_keeps_the_answers(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", {"artifacts": MODEL, "stages": TRAIN}, {"loss": 0.3, "acc": 0.9})
    quiet = subprocess.run([*SELFHEAL, "init"], cwd=repo, capture_output=True, text=True, input="")
    assert quiet.returncode == 0 and "still to choose: gate.bound" in quiet.stdout
    assert yaml.safe_load((repo / "selfheal.yaml").read_text())["gate"]["direction"] == "min"  # guessed from `loss`
    asked = subprocess.run([*SELFHEAL, "init", "--interactive", "--force"], cwd=repo, capture_output=True, text=True,
                           input="metrics.json:acc\nmax\n0.8\nprod\n\n\n\n")  # no drift, retrain, service
    assert asked.returncode == 0, asked.stderr
    gate = yaml.safe_load((repo / "selfheal.yaml").read_text())["gate"]
    assert (gate["key"], gate["direction"], gate["bound"], gate["stage"]) == ("acc", "max", 0.8, "prod")


def test_init_watches_every_input_no_stage_makes_and_ignores_its_records(tmp_path: Path) -> None:
    """An XML raw input (example-get-started's data.xml) is watched like any data file; code is not data; the
    records folder goes into .gitignore; interactive answers are not reported as guesses."""
    stages = {"prepare": {"cmd": "python src/prepare.py", "deps": ["data/data.xml", "src/prepare.py", "data/lookup"],
                          "outs": ["data/prepared"]},
              "train": {"cmd": "python train.py", "deps": ["data/prepared"], "outs": ["model.pkl"],
                        "metrics": ["metrics.json"]}}
    repo = _repo(tmp_path / "repo", {"artifacts": MODEL, "stages": stages}, {"acc": 0.9, "f1": 0.8})
    (repo / "data/lookup").mkdir(parents=True)
    (repo / ".gitignore").write_text("/model.pkl")
    quiet = subprocess.run([*SELFHEAL, "init"], cwd=repo, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert yaml.safe_load((repo / "selfheal.yaml").read_text())["data"] == {"deps": ["data/data.xml"]}
    assert "found data directories data/lookup: not watched" in quiet.stdout
    assert "was guessed among 2 numeric keys (metrics.json:f1 also qualify)" in quiet.stdout
    assert (repo / ".gitignore").read_text().splitlines()[-1] == "/.selfheal/"
    asked = subprocess.run([*SELFHEAL, "init", "--interactive", "--force"], cwd=repo, capture_output=True, text=True,
                           input="metrics.json:acc\nmax\n0.8\nprod\n\n\n\n\n")  # no label, drift, retrain,
    assert asked.returncode == 0 and "guessed" not in asked.stdout  # service and "added" not in asked.stdout
    assert (repo / ".gitignore").read_text().count(".selfheal") == 1
