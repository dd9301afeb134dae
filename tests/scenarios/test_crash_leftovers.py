"""Crash leftovers: kill -9 in the middle of an action, then the next heal completes or reports it.

The kills are real (SIGKILL of a `selfheal` process paused by $SELFHEAL_PAUSE_AT at a known step); the outcome is
checked on the files themselves (md5s, what is on disk), not only on selfheal's own logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from selfheal.core import audit
from selfheal.core.atomic import PAUSE_ENV, md5_file
from tests.heal_support import env, model_md5, production_of, selfheal

pytestmark = pytest.mark.slow


def kill_at(step: str, *args: str, cwd: Path) -> None:
    """Run `selfheal ARGS` until it reaches `step`, then SIGKILL it."""
    proc = subprocess.Popen(["selfheal", *args], cwd=cwd, env={**env(), PAUSE_ENV: step}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip() == f"paused at {step}":
                break
        else:
            raise AssertionError(f"selfheal {' '.join(args)} ended (code {proc.wait()}) before {step}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def log(repo: Path, rel: str) -> list[dict]:
    return json.loads((repo / rel).read_text()) if (repo / rel).exists() else []


def test_a_killed_rollback_and_a_killed_write_are_settled_by_the_next_heal(bad_candidate: Path, workdir) -> None:
    repo = workdir(bad_candidate)
    good = production_of(repo)["md5"]
    assert model_md5(repo) != good

    kill_at("rollback:restored", "rollback", cwd=repo)
    assert model_md5(repo) == good  # the rollback did its work ...
    assert log(repo, "models/rollback_log.json") == []  # ... and died before logging it: the audit gap

    out = selfheal("heal", cwd=repo, check=False)
    assert "heal: healthy" not in out.stdout and "heal: done" in out.stdout, out.stdout + out.stderr
    assert "auto_rollback by pid" in out.stdout and "was killed after it finished, before it logged" in out.stdout
    (rolled,) = log(repo, "models/rollback_log.json")
    assert rolled["success"] and rolled["recovered_from_journal"] and rolled["restored_md5"] == good
    assert model_md5(repo) == good

    raw = repo / "data/raw/housing.csv"
    raw_md5 = md5_file(raw)
    kill_at("write:housing.csv", "fix-data", cwd=repo)
    (leftover,) = raw.parent.glob(".housing.csv.*.tmp")  # the killed atomic write's temporary file
    assert md5_file(raw) == raw_md5  # the original is whole

    out = selfheal("heal", cwd=repo, check=False)
    assert "heal: healthy" not in out.stdout and "heal: done" in out.stdout, out.stdout + out.stderr
    assert "auto_fix_data by pid" in out.stdout and "was interrupted before it finished" in out.stdout
    assert not leftover.exists() and md5_file(raw) == raw_md5
    interrupted = [e for e in log(repo, "monitoring/heal_log.json") if e["action"] == "interrupted_auto_fix_data"]
    assert len(interrupted) == 1 and interrupted[0]["success"] is False
    assert json.loads((repo / ".selfheal/journal.json").read_text()) == []
    assert len(log(repo, "models/rollback_log.json")) == 1  # logged once

    again = selfheal("heal", cwd=repo, check=False)  # settled once: the next heal has nothing left to report
    assert "killed" not in again.stdout and "interrupted" not in again.stdout


def test_a_retrain_killed_after_its_fold_is_undone_and_logged_by_the_next_heal(promoted: Path, workdir) -> None:
    """The batch was folded into the raw data, then the retrain was killed: the next heal puts the raw data back
    from the retrain's backup (so the folded batch is never promoted unjudged) and the retraining log says so."""
    from selfheal.pipeline.synth import make_current

    repo = workdir(promoted)
    raw = repo / "data/raw/housing.csv"
    raw_md5, production = md5_file(raw), production_of(repo)
    make_current(300, 1.0, 7).to_csv(repo / "data/current/housing.csv", index=False)
    kill_at("retrain:folded", "retrain", "--drift-detected", cwd=repo)
    assert md5_file(raw) != raw_md5  # the fold happened, and nothing logged it

    out = selfheal("heal", cwd=repo, check=False)
    assert "auto_retrain by pid" in out.stdout and "undone: " in out.stdout, out.stdout + out.stderr
    assert md5_file(raw) == raw_md5 and production_of(repo) == production and "Promoted" not in out.stdout
    (entry,) = audit.entries(repo / ".github/triggers/retraining_log.json")
    assert (entry["outcome"], entry["success"]) == ("interrupted", False) and "data/raw/housing.csv" in entry["undone"]
    assert "heal: healthy" not in out.stdout
