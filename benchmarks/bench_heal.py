"""Healing speed on the default data (sandbox from a fresh clone, `dvc repro`, first model promoted).

- heal_healthy: `selfheal heal` on a healthy pipeline, whole process (target < 3 s); and interleaved with `dvc
  status` on the same project, the ratio of the medians (target < 0.5);
- rollback: `selfheal rollback` from a failed candidate to the verified production model, whole process -
  reading the verdict, choosing the version, restoring and md5-checking every file (target < 3 s); also the
  rollback's own duration as logged (decision to verified model, without interpreter start-up);
- heal_rollback: `selfheal heal` that finds the failed candidate and rolls it back.
Median of 3 each.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from benchmarks.timing import median_of, side_by_side, wall
from selfheal.core import workspace
from selfheal.core.atomic import read_json
from selfheal.ops import sandbox

ROOT = Path(__file__).resolve().parents[1]


def _bad_candidate(repo: Path) -> None:
    """A one-round boosting model: trained and validated, fails the gate."""
    params = yaml.safe_load((repo / workspace.PARAMS).read_text())
    params["train"]["hist_gradient_boosting"]["max_iter"] = 1
    (repo / workspace.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    sandbox.run(["dvc", "repro", "validate"], repo)


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-heal-") as tmp:
        base = sandbox.create(Path(tmp) / "healthy", ROOT)
        sandbox.run(["dvc", "repro"], base)
        sandbox.commit(base, "dvc repro")
        sandbox.run(["selfheal", "promote"], base)
        healthy, versus_status = side_by_side(["selfheal", "heal"], ["dvc", "status"], base)
        plan = median_of(3, lambda: wall(["selfheal", "heal", "--plan"], base))

        bad = Path(tmp) / "bad"
        shutil.copytree(base, bad, symlinks=True)
        _bad_candidate(bad)
        logged: list[float] = []

        def fresh_copy(name: str) -> Path:
            repo = Path(tmp) / name
            shutil.rmtree(repo, ignore_errors=True)
            shutil.copytree(bad, repo, symlinks=True)
            return repo

        def rollback_once() -> float:
            repo = fresh_copy("rb")
            seconds = wall(["selfheal", "rollback"], repo)
            logged.append(read_json(repo / workspace.ROLLBACK_LOG)[-1]["duration_s"])
            return seconds

        rollback = median_of(3, rollback_once)
        heal_rollback = median_of(3, lambda: wall(["selfheal", "heal"], fresh_copy("hr")))
    logged.sort()
    return {
        "rows": yaml.safe_load((ROOT / workspace.PARAMS).read_text())["synth"]["rows"],
        "heal_healthy": {**healthy, "target_s": 3},
        "heal_healthy_versus_dvc_status": {**versus_status, "target_ratio": 0.5},
        "heal_plan": plan,
        "rollback": {**rollback, "target_s": 3, "logged_decision_to_verified_median_s": logged[1]},
        "heal_rollback": heal_rollback,
    }
