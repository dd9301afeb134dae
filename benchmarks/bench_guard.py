"""Guarding a project selfheal did not write (tests/foreign_project.py: example-get-started's shape, `selfheal init`).

- heal_healthy: `selfheal heal` on the healthy project, whole process (target < 1 s); and interleaved with
  `dvc status` on the same project, the ratio of the medians (target < 0.5: heal checks more than status does);
- heal_healthy_all_sections: the same on the CSV variant with every optional section configured (data.fix,
  drift, a running service): the warm figure is the target (< 1 s); `first_s` is the first heal, which reads the
  data with pandas and measures drift once (later heals reuse both while the files' bytes are unchanged);
- rollback: `selfheal rollback` of a failed candidate back to production's model.pkl and eval/ directory, the
  rollback's own logged duration - decision to md5-verified outputs (target < 2 s) - and the whole process.
Median of 3 each; `cpu_s` is the CPU time of a heal (user + system; median of 3 where given), which a loaded
machine does not inflate.
"""

from __future__ import annotations

import json
import resource
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.timing import median_of, side_by_side, wall
from selfheal.ops import sandbox
from selfheal.service import procs
from tests import foreign_project as foreign


def _cpu_of(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of `cmd`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = wall(cmd, cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def all_sections(tmp: Path) -> dict:
    """heal on the CSV variant with data.fix, drift and a running service configured: first, then warm."""
    repo = foreign.create(tmp / "csv", csv=True)
    sandbox.run(["selfheal", "init"], repo)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    foreign.write_csv(repo / "data/current.csv", 200, seed=5)
    config = yaml.safe_load((repo / "selfheal.yaml").read_text())
    config["data"]["target"] = "label"
    config["drift"] = {"reference": "data/data.csv", "current": "data/current.csv", "columns": ["score"]}
    config["service"] = {"health": f"http://127.0.0.1:{port}/health", "start": f"{sys.executable} src/serve.py {{port}}"}
    (repo / "selfheal.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    sandbox.run(["selfheal", "recover"], repo)  # starts the service
    try:
        first = _cpu_of(["selfheal", "heal"], repo)
        runs = [_cpu_of(["selfheal", "heal"], repo) for _ in range(3)]
    finally:
        info = json.loads((repo / ".selfheal/service.pid").read_text())
        procs.terminate(info["pid"], 1.0, info["create_time"])
    walls = [w for w, _ in runs]
    return {"median_s": round(statistics.median(walls), 3), "min_s": round(min(walls), 3),
            "max_s": round(max(walls), 3), "cpu_s": round(statistics.median(c for _, c in runs), 3),
            "first_s": round(first[0], 3), "first_cpu_s": round(first[1], 3), "target_s": 1}


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-guard-") as tmp:
        sections = all_sections(Path(tmp))
        base = foreign.create(Path(tmp) / "proj")
        sandbox.run(["selfheal", "init"], base)
        healthy, versus_status = side_by_side(["selfheal", "heal"], ["dvc", "status"], base)
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
        "heal_healthy_versus_dvc_status": {**versus_status, "target_ratio": 0.5},
        "heal_healthy_all_sections": sections,
        "rollback": {**rollback, "logged_decision_to_verified_median_s": logged[1], "target_s": 2},
    }
