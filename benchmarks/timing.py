"""Whole-process timing for benchmarks: wall time and peak memory of a command, median of N runs."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from selfheal.ops import sandbox

# A fresh interpreter runs the command, so its RUSAGE_CHILDREN peak belongs to that command alone.
_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def wall(cmd: list[str], cwd: Path, extra_env: dict[str, str] | None = None) -> float:
    """Seconds for one run of `cmd` (which must succeed)."""
    started = time.perf_counter()
    sandbox.run(cmd, cwd, extra_env=extra_env)
    return time.perf_counter() - started


def median_of(n: int, once: Callable[[], float]) -> dict[str, float]:
    """Call `once` n times; report min/median/max seconds."""
    runs = [once() for _ in range(n)]
    return {"median_s": round(statistics.median(runs), 3), "min_s": round(min(runs), 3), "max_s": round(max(runs), 3)}


def side_by_side(ours: list[str], anchor: list[str], cwd: Path, n: int = 3) -> tuple[dict[str, float], dict]:
    """`ours` and `anchor` run alternately n times each in `cwd` (so a busy moment hits both): `ours`'s
    min/median/max, and the ratio of the medians - the figure to quote - beside the anchor's median."""
    mine, theirs = [], []
    for _ in range(n):
        mine.append(wall(ours, cwd))
        theirs.append(wall(anchor, cwd))
    ours_s, anchor_s = statistics.median(mine), statistics.median(theirs)
    spread = {"median_s": round(ours_s, 3), "min_s": round(min(mine), 3), "max_s": round(max(mine), 3)}
    return spread, {"median_s": round(ours_s, 3), "anchor": " ".join(anchor), "anchor_median_s": round(anchor_s, 3),
                    "ratio": round(ours_s / anchor_s, 2)}


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Peak resident memory of one run of `cmd` and its children, in MB."""
    proc = sandbox.run([sys.executable, "-c", _PEAK, *cmd], cwd)
    return round(int(proc.stderr.strip().splitlines()[-1]) / 1024, 1)
