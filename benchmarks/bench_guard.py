"""Guarding a project selfheal did not write (selfheal.ops.foreign: example-get-started's shape, `selfheal init`).

- heal_healthy: `selfheal heal` on the healthy project, whole process (target < 1 s);
- rollback: `selfheal rollback` of a failed candidate back to production's model.pkl and eval/ directory, the
  rollback's own logged duration - decision to md5-verified outputs (target < 2 s) - and the whole process.
Median of 3 each; `cpu_s` is the CPU time of one heal (user + system), which a loaded machine does not inflate.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
from pathlib import Path

from benchmarks.timing import median_of, wall
from selfheal.ops import foreign, sandbox


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-guard-") as tmp:
        base = foreign.create(Path(tmp) / "proj")
        sandbox.run(["selfheal", "init"], base)
        healthy = median_of(3, lambda: wall(["selfheal", "heal"], base))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        sandbox.run(["selfheal", "heal"], base)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        foreign.set_params(base, "featurize", max_features=3)
        sandbox.run(["dvc", "repro", "-q"], base)
        logged: list[float] = []

        def rollback_once() -> float:
            repo = Path(tmp) / "rb"
            shutil.rmtree(repo, ignore_errors=True)
            shutil.copytree(base, repo, symlinks=True)
            seconds = wall(["selfheal", "rollback"], repo)
            logged.append(json.loads((repo / ".selfheal/rollback_log.json").read_text())[-1]["duration_s"])
            return seconds

        rollback = median_of(3, rollback_once)
    logged.sort()
    return {
        "heal_healthy": {**healthy, "cpu_s": round(cpu, 3), "target_s": 1},
        "rollback": {**rollback, "logged_decision_to_verified_median_s": logged[1], "target_s": 2},
    }
