"""Pipeline speed on the default data: cold `dvc repro` (fresh clone) and no-op `dvc repro`.

Targets (2-core machine, median of 3): cold under 25 s, no-op under 1.5 s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from benchmarks.timing import median_of, wall
from selfheal.core import workspace
from selfheal.ops import sandbox

ROOT = Path(__file__).resolve().parents[1]


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as tmp:
        fresh = sandbox.create(Path(tmp) / "fresh", ROOT)

        def cold() -> float:
            repo = Path(tmp) / "cold"
            shutil.rmtree(repo, ignore_errors=True)
            shutil.copytree(fresh, repo, symlinks=True)
            return wall(["dvc", "repro"], repo)

        cold_figures = median_of(3, cold)
        noop_figures = median_of(3, lambda: wall(["dvc", "repro"], Path(tmp) / "cold"))
    return {
        "rows": sandbox_rows(),
        "cold_repro": {**cold_figures, "target_s": 25},
        "noop_repro": {**noop_figures, "target_s": 1.5},
    }


def sandbox_rows() -> int:
    from selfheal.core.config import load_params

    return load_params(ROOT / workspace.PARAMS).synth.rows
