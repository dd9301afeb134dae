"""Our pipeline's configuration: params.yaml (what stages read) with selfheal.yaml's own groups (what only
selfheal reads); unknown keys, wrong types and a group in the wrong file are one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.core import project
from selfheal.core.config import load_params, parse_params
from selfheal.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_params_and_seed_config_load() -> None:
    own = project.load(ROOT / "selfheal.yaml").own_groups()
    params = load_params(ROOT / "params.yaml", ROOT / "config/self_healing_config.json", own)
    assert params.data_quality.outlier_threshold_iqr == 3.0
    assert params.model_validation.min_accuracy_threshold == 0.70
    assert params.drift_detection.retraining_cooldown_hours == 24
    assert params.service_recovery.max_recovery_attempts == 3


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"train": {"modle": "linear"}}, "train.modle: unknown key"),
        ({"train": {"test_size": "big"}}, "train.test_size: Input should be a valid number"),
        ({"data_quality": {"auto_fix_enabled": "yes"}}, "data_quality.auto_fix_enabled: Input should be a valid boolean"),
        ({"train": {"model": "xgboost"}}, "train.model: Input should be"),
        ({"data": {"ranges": {"HouseAge": [0]}}}, "data.ranges.HouseAge"),
        ({"nonsense": {}}, "nonsense: unknown key"),
        ({"model_validation": {"min_accuracy_threshold": -1}}, "model_validation.min_accuracy_threshold: Input "
                                                                "should be greater than or equal to 0"),
        ({"model_validation": {"min_accuracy_threshold": 1.5}}, "model_validation.min_accuracy_threshold: Input "
                                                                 "should be less than or equal to 1"),
    ],
)
def test_bad_values_name_the_key(raw: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        parse_params(raw, "params.yaml")


def test_seed_json_overrides_the_healing_groups_and_is_checked(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    seed = tmp_path / "self_healing_config.json"
    seed.write_text(json.dumps({"drift_detection": {"drift_threshold": 0.3, "retraining_cooldown_hours": 2}}))
    loaded = load_params(params, seed)
    assert loaded.drift_detection.drift_threshold == 0.3
    assert loaded.drift_detection.auto_retrain_enabled is True  # params.yaml keeps what the JSON does not name
    seed.write_text(json.dumps({"train": {"model": "linear"}}))
    with pytest.raises(ConfigError, match="unknown group"):
        load_params(params, seed)
    seed.write_text(json.dumps({"service_recovery": {"max_recovery_attempts": "three"}}))
    with pytest.raises(ConfigError, match=r"self_healing_config\.json: service_recovery\.max_recovery_attempts"):
        load_params(params, seed)


def test_the_cli_answers_a_bad_params_file_with_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = yaml.safe_load((ROOT / "params.yaml").read_text())
    bad["drift_detection"]["drift_treshold"] = 0.4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    selfheal = Path(sys.executable).parent / "selfheal"
    proc = subprocess.run([str(selfheal), "heal", "--plan"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params.yaml: drift_detection.drift_treshold: unknown key (got 0.4)"
    ]
    assert "Traceback" not in proc.stderr


def test_each_group_has_one_home_and_a_misplaced_one_is_named(tmp_path: Path) -> None:
    """service_recovery in params.yaml (where it used to be) is refused with where it goes; in selfheal.yaml it
    reaches the commands, checked like any group; a project serving its own model cannot set it."""
    selfheal = Path(sys.executable).parent / "selfheal"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**raw, "service_recovery": {"workers": 3}}))
    proc = subprocess.run([str(selfheal), "heal", "--plan"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: params.yaml: service_recovery: only selfheal reads this, so it lives in selfheal.yaml (params.yaml "
        "holds what the stages read); move the group there, keys unchanged"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    ours = {**project.OURS, "service_recovery": {"workers": 3}, "escalation": {"max_same_issue": 1}}
    (tmp_path / "selfheal.yaml").write_text(yaml.safe_dump(ours))
    loaded = load_params(tmp_path / "params.yaml", own=project.load(tmp_path / "selfheal.yaml").own_groups())
    assert (loaded.service_recovery.workers, loaded.escalation.max_same_issue) == (3, 1)
    (tmp_path / "selfheal.yaml").write_text(yaml.safe_dump({**ours, "service_recovery": {"workers": 0}}))
    proc = subprocess.run([str(selfheal), "heal", "--plan"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: selfheal.yaml: service_recovery.workers: Input "
                                                           "should be greater than 0")
    with pytest.raises(ConfigError, match="a project's own service is `service:`"):
        project.parse({**ours, "kind": "dvc"})


@pytest.mark.parametrize(("text", "says"), [
    ("", "params.yaml is empty; expected the groups data, synth,"),
    (None, "params.yaml has no group(s) drift_detection; expected the groups"),
])
def test_an_empty_or_truncated_params_file_is_refused_as_dvc_refuses_it(project: Path, text: str | None,
                                                                        says: str) -> None:
    """A params.yaml without a group selfheal needs is an error, not defaults: a forced retrain would otherwise
    fold data, retrain and start the 24 h cooldown on values nobody chose."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["drift_detection"]
    (project / "params.yaml").write_text(yaml.safe_dump(params) if text is None else text)
    raw_before = (project / "data/raw/housing.csv").read_bytes()
    selfheal = Path(sys.executable).parent / "selfheal"
    proc = subprocess.run([str(selfheal), "retrain", "--force"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {says}")
    assert not (project / ".github/triggers/retraining_log.json").exists()
    assert (project / "data/raw/housing.csv").read_bytes() == raw_before
    stage = subprocess.run([sys.executable, "-m", "stages.monitor"], cwd=project, capture_output=True, text=True)
    assert stage.returncode == 2 and stage.stderr.strip().startswith(f"error: {says}")  # the DVC stages too
