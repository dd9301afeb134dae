"""`selfheal drill --quick` on a small subset, as CI runs it: the scorecard's structure, and every healed trial
really ended in a good state, checked here again from the kept copies without selfheal's code or logs."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal.ops import faults, sandbox
from selfheal.ops.faults import Fault, Project
from selfheal.ops.sandbox import run
from selfheal.ops.scorecard import markdown
from selfheal.ops.trials import classify
from tests.heal_support import production_of

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SUBSET = "missing_values,corrupted_model_file,invalid_params_value"


def _really_good(copy: Path) -> None:
    """Production is a git-tagged version whose recorded md5 is the model file's; the clean data is clean."""
    production = production_of(copy)
    message = subprocess.run(["git", "tag", "-l", "--format=%(contents)", f"model@{production['version']}"],
                             cwd=copy, capture_output=True, text=True, check=True).stdout
    tagged = json.loads(message[message.index("{"):])["md5"]
    assert hashlib.md5((copy / "models/model.joblib").read_bytes()).hexdigest() == tagged
    clean = pd.read_parquet(copy / "data/clean/housing.parquet")
    assert not clean.isna().any().any() and not clean.duplicated().any()


def test_quick_drill_on_a_subset_scores_and_heals_for_real(tmp_path: Path) -> None:
    project = sandbox.create(tmp_path / "project", ROOT)  # the user's checkout, as a fresh clone holds it
    keep = tmp_path / "drill"
    proc = run(["selfheal", "drill", "--quick", "--faults", SUBSET, "--keep", str(keep)], project, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for n, name in enumerate(SUBSET.split(","), 1):
        assert f"drill [{n}/3] {name}: " in proc.stdout  # progress per trial
    card = json.loads((project / "metrics/drill.json").read_text())
    assert {"seed", "revision", "quick", "baseline", "trials", "summary"} <= set(card)
    assert card["seed"] == 42 and card["quick"] is True and card["revision"] in proc.stdout + json.dumps(card)
    trials = {t["fault"]: t for t in card["trials"]}
    assert set(trials) == set(SUBSET.split(","))
    for t in trials.values():
        assert {"detected", "action", "outcome", "time_to_detect_s", "time_to_recover_s", "requests_failed",
                "end_state_good"} <= set(t)
        assert t["ok"] and t["detected"], t
    assert trials["invalid_params_value"]["outcome"] == "escalated"
    for name in ("missing_values", "corrupted_model_file"):
        assert trials[name]["outcome"] == "healed"
        _really_good(keep / "trials" / f"{name}-1")
    text = (project / "metrics/drill.md").read_text()
    assert "# selfheal drill: 3/3 trials as expected" in text and "| corrupted_model_file | healed |" in text
    assert "Auto-fix success rate: 100.0 %" in text
    # the user's workspace was not touched: no versions, no production, no logs
    assert not run(["git", "tag"], project).stdout.strip()
    assert production_of(project) == {}
    assert not (project / "monitoring").exists()


def test_injection_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    rows = pd.DataFrame({"a": np.arange(200, dtype=float), "b": np.arange(200, dtype=float) * 2, "y": 1.0})
    outputs = []
    for attempt in range(2):
        raw = tmp_path / f"raw{attempt}.csv"
        rows.to_csv(raw, index=False)
        project = Project(tmp_path, raw, raw, "y", fix_file=raw)
        for name in ("missing_values", "outliers", "numbers_as_text", "duplicates"):
            faults.BY_NAME[name].inject(project, np.random.default_rng(7))
        outputs.append(raw.read_text())
    assert outputs[0] == outputs[1] and outputs[0] != rows.to_csv(index=False)


@pytest.mark.parametrize(("expected", "facts", "outcome"), [
    ("healed", {"exit_code": 0, "good": True, "fixed": True}, "healed"),
    ("healed", {"exit_code": 0, "good": True, "fixed": False}, "missed"),
    ("healed", {"exit_code": 1, "good": True, "fixed": False}, "escalated"),
    ("healed", {"exit_code": 0, "good": False, "acted": True}, "wrong"),
    ("escalated", {"exit_code": 1, "good": True}, "escalated"),
    ("escalated", {"exit_code": 0, "good": True}, "missed"),
    ("escalated", {"exit_code": 0, "good": True, "prod_changed": True}, "wrong"),
    ("left_alone", {"exit_code": 0, "good": True}, "left_alone"),
    ("left_alone", {"exit_code": 0, "good": True, "new_versions": True, "acted": True}, "wrong"),
])
def test_outcomes_count_wrong_actions_not_only_misses(expected: str, facts: dict, outcome: str) -> None:
    from selfheal.ops.trials import Trial

    fault = Fault("f", "data", expected, lambda p, r: "")  # type: ignore[arg-type]
    t = Trial("f", "data", expected, 1, exit_code=facts["exit_code"], end_state_good=facts["good"])
    got = classify(fault, t, prod_changed=facts.get("prod_changed", False),
                   new_versions=facts.get("new_versions", False), fixed=facts.get("fixed", False),
                   acted=facts.get("acted", False))
    assert got == outcome


def test_unknown_fault_is_a_clear_error(tmp_path: Path) -> None:
    proc = run(["selfheal", "drill", "--faults", "missing_valus"], tmp_path, check=False)
    assert proc.returncode == 2 and "unknown fault 'missing_valus'" in proc.stderr and "Traceback" not in proc.stderr


def test_the_catalogue_covers_the_issue_and_the_markdown_names_it() -> None:
    names = {f.name for f in faults.CATALOGUE}
    assert len(names) >= 16 and {f.group for f in faults.CATALOGUE} == {"data", "model", "drift", "service", "config"}
    card = {"seed": 1, "revision": "abc", "quick": True, "repeat": 1, "started_at": "now",
            "baseline": {"version": "v0.0.1", "cold_repro_s": 10.0}, "trials": [],
            "summary": {"trials": 0, "passed": 0, "missed": 0, "wrong": 0, "auto_fix_success_rate": None,
                        "rollbacks": 0, "mttr_s": None, "mttr_service_crash_s": None, "mttr_service_hang_s": None,
                        "failed_requests_during_rollbacks": 0, "drift_response_s": None,
                        "drift_response_vs_cold_repro": None, "service_uptime_pct": None, "kinds": {}}}
    assert "Seed 1, revision `abc`" in markdown(card)
    assert "no restart budget, cooldown or record carries over" in markdown(card)
    missed = {"fault": "service_hang", "repeat": 2, "ok": False, "outcome": "missed", "expected": "healed",
              "end_state": ["the service does not answer with production's model"], "note": "", "action": "",
              "evidence": {"served": {"healthy": True, "md5": "c" * 32}, "production": {"version": "v0.0.1"},
                           "last_failed_request_s": 1.25, "processes": ["41 python -m selfheal.service"]}}
    text = markdown({**card, "busy": 2, "trials": [missed]})
    assert "Busy machine: 2 CPU-bound process(es) ran throughout" in text
    assert (f"  - evidence: served: {{'healthy': True, 'md5': '{'c' * 32}'}}; production: {{'version': 'v0.0.1'}}; "
            "last_failed_request_s: 1.25; processes: 41 python -m selfheal.service") in text


def test_a_group_with_no_fault_for_this_project_is_named_not_unknown() -> None:
    from selfheal.core.errors import SelfHealError

    with pytest.raises(SelfHealError, match=r"no fault of group 'data' applies to this project \(they need: "
                                            r"data_fix_csv\); applicable groups: config, model"):
        faults.select("data", frozenset({"dvc", "model"}))
    assert {f.group for f in faults.select("model", frozenset({"dvc", "model"}))} == {"model"}


def test_a_drill_stopped_with_sigterm_removes_its_temporary_folder(tmp_path: Path) -> None:
    import os
    import signal
    import time

    project = sandbox.create(tmp_path / "project", ROOT)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(["selfheal", "drill", "--quick", "--faults", "missing_values"], cwd=project,
                            env={**sandbox.env(), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(scratch.glob("selfheal-drill-*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert any(scratch.glob("selfheal-drill-*")), "the drill never made its temporary folder"
    time.sleep(1)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert not any(scratch.glob("selfheal-drill-*"))
