"""What heal observes on a real promoted project: the same facts for the policy whatever the project kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfheal.core import atomic, workspace
from selfheal.core.project import open_project
from selfheal.healing.observe import observe, settings
from selfheal.ops.sandbox import set_params
from tests.heal_support import production_of

pytestmark = pytest.mark.slow


def test_a_promoted_project_is_observed_as_production_with_nothing_altered(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    obs = observe(open_project(repo), repo, remember=False)
    production = production_of(repo)
    assert obs.built and obs.changed == () and obs.edited_params == () and obs.altered == ()
    assert obs.candidate == production["md5"] == (obs.production or {}).get("md5")
    assert obs.monitor_stage and obs.monitored == obs.candidate
    assert (obs.service or {}).get("state") == "absent"


def test_corrupted_model_bytes_and_edited_params_are_seen(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    model = repo / workspace.MODEL
    model.write_bytes(model.read_bytes() + b"x")
    set_params(repo, train={"test_size": 0.3})
    obs = observe(open_project(repo), repo, remember=False)
    (altered,) = obs.altered
    assert altered.startswith(f"{workspace.MODEL} is md5 {atomic.md5_file(model)}, not the {production_of(repo)['md5']}")
    assert "params.yaml:train" in obs.edited_params and not obs.params_rejected  # the stage reads the whole group


def test_settings_name_the_switches_the_user_writes(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    set_params(repo, drift_detection={"auto_retrain_enabled": False, "retraining_cooldown_hours": 3})
    rules = settings(open_project(repo))
    assert (rules.auto_retrain, rules.cooldown_hours, rules.repro_fixes) == (False, 3, True)
    assert rules.retrain_switch == "drift_detection.auto_retrain_enabled"
