"""Scale figures, on real-shaped data: 49 copies of the California housing CSV (~1M rows) with 1% NaN in
3 columns, 0.1% outliers and 1% duplicate rows.

- fix_vs_peer: `selfheal fix-data` in place against the peer's scripts/auto_fix_data_issues.py
  (agasthyarkumar/MLOPs-Project; not vendored: point $SELFHEAL_PEER_SCRIPT at a copy), interleaved. Target <= 0.5x.
- drift: per-column drift of the ROWS-row file (its NaN left out by both) against a shuffled copy with 5 columns
  shifted by half a standard deviation, ROWS + ROWS rows, from merged profiles (read + profile + tests) against
  plain Evidently (pandas read + ValueDrift per column) on the same frames; verdicts must be equal.
  Target >= 3x faster.
- memory: fix_data (partitioned) + profile drift at ROWS and at BIG_ROWS (the file repeated), peak RSS of each
  run in its own process. Target: <= 8 GB, and within 20% from ROWS to BIG_ROWS.
- dask: the partitioned fix on a 2-worker LocalCluster against the local engine. Target <= 1.5x. Beside it, the
  seconds to start and stop that cluster alone (a fixed cost the ratio includes).

Size knobs (environment): SELFHEAL_BENCH_ROWS (default 1,000,000), SELFHEAL_BENCH_BIG_ROWS (20,000,000; 0 skips),
SELFHEAL_BENCH_REPEATS (3), SELFHEAL_HOUSING_CSV (/work/shared/data/california_housing.csv).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.timing import peak_rss_mb
from selfheal.core import workspace

ROOT = Path(__file__).resolve().parents[1]

ROWS = int(os.environ.get("SELFHEAL_BENCH_ROWS", 1_000_000))
BIG_ROWS = int(os.environ.get("SELFHEAL_BENCH_BIG_ROWS", 20_000_000))
REPEATS = int(os.environ.get("SELFHEAL_BENCH_REPEATS", 3))
HOUSING = Path(os.environ.get("SELFHEAL_HOUSING_CSV", "/work/shared/data/california_housing.csv"))
PEER = os.environ.get("SELFHEAL_PEER_SCRIPT", "")
FAULT_COLUMNS = ("MedInc", "AveRooms", "HouseAge")
SHIFTED = ("MedInc", "AveRooms", "Population", "AveOccup", "Latitude")

# one process: fix `raw` into a partitioned parquet directory, then profile drift of it against `current`
_JOB = """
import sys
from selfheal.core.config import DataQualityParams
from selfheal.pipeline import partitioned, profile_drift
raw, out, current, engine = sys.argv[1:5]
report = partitioned.fix_partitioned(raw, out, "MedHouseVal", "regression", {}, {}, DataQualityParams(), engine,
                                     partition_mb=float(sys.argv[5]))
kinds = {c: "numeric" for c in report["columns"] if c != "MedHouseVal"}
drift = profile_drift.drift(partitioned.profile_source(out, kinds), partitioned.profile_source(current, kinds),
                            list(kinds))
print(report["rows_out"], sum(v["drifted"] for v in drift.values()))
"""


def faulted(rows: int, seed: int = 0) -> pd.DataFrame:
    """`rows` rows of the housing data (49 copies for 1M) with the issue's faults injected."""
    base = pd.read_csv(HOUSING)
    df = pd.concat([base] * (rows // len(base) + 1), ignore_index=True).iloc[:rows].copy()
    rng = np.random.default_rng(seed)
    for col in FAULT_COLUMNS:
        df.loc[rng.random(rows) < 0.01, col] = np.nan
    for col in df.columns[:-1]:
        hit = rng.random(rows) < 0.001 / (len(df.columns) - 1) * len(df.columns)
        q1, q3 = df[col].quantile([0.25, 0.75])
        df.loc[hit, col] = q3 + 20 * (q3 - q1)
    dups = df.iloc[rng.choice(rows, size=rows // 100, replace=False)]
    return pd.concat([df.iloc[: rows - len(dups)], dups], ignore_index=True)


def _timed(cmd: list[str], cwd: Path) -> float:
    """Seconds for one run; exit 1 is a finished fix that left problems (fix-data's "still invalid")."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}")
    return time.perf_counter() - started


def _fix_vs_peer(raw: Path, work: Path) -> dict:
    if not PEER or not Path(PEER).is_file():
        return {"skipped": "set SELFHEAL_PEER_SCRIPT to a copy of the peer's scripts/auto_fix_data_issues.py"}
    shutil.copy(ROOT / workspace.PARAMS, work / workspace.PARAMS)  # the defaults, in a workspace of its own
    ours_cmd = [str(Path(sys.executable).parent / "selfheal"), "fix-data", "--data-path"]
    times: dict[str, list[float]] = {"selfheal": [], "peer": []}
    rows: dict[str, int] = {}
    for _ in range(REPEATS):  # interleaved, each on a fresh copy
        for name, cmd in (("selfheal", ours_cmd), ("peer", [sys.executable, PEER, "--data-path"])):
            target = work / f"{name}.csv"
            shutil.copy(raw, target)
            times[name].append(_timed([*cmd, str(target)], work))
            rows[name] = target.read_bytes().count(b"\n") - 1
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"selfheal_s": round(med["selfheal"], 2), "peer_s": round(med["peer"], 2),
            "ratio": round(med["selfheal"] / med["peer"], 3), "target_ratio": 0.5,
            "rows_out": rows}


def _drift(reference: Path, current: Path) -> dict:
    from selfheal.pipeline import partitioned, profile_drift
    from selfheal.pipeline.drift_report import evidently_drift

    kinds = {c: "numeric" for c in pd.read_csv(reference, nrows=1).columns if c != "MedHouseVal"}
    evidently_drift(pd.read_csv(reference, nrows=2000), pd.read_csv(current, nrows=2000), kinds)  # imports, warm-up
    ours, theirs = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        verdicts = profile_drift.drift(partitioned.profile_source(str(reference), kinds),
                                       partitioned.profile_source(str(current), kinds), list(kinds))
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        plain, _ = evidently_drift(pd.read_csv(reference), pd.read_csv(current), kinds)
        theirs.append(time.perf_counter() - started)
    agree = {c: verdicts[c]["drifted"] == plain[c]["drifted"] for c in kinds}
    return {"profiles_s": round(statistics.median(ours), 2), "evidently_s": round(statistics.median(theirs), 2),
            "speedup": round(statistics.median(theirs) / statistics.median(ours), 2), "target_speedup": 3,
            "verdicts_equal": all(agree.values()), "drifted_columns": sum(v["drifted"] for v in verdicts.values())}


def _memory(raw: Path, current: Path, work: Path, mb: float) -> dict:
    figures = {}
    sizes = {"rows": raw}
    if BIG_ROWS > ROWS:
        big = work / "big.csv"
        lines = raw.read_bytes().split(b"\n", 1)
        with open(big, "wb") as fh:
            fh.write(lines[0] + b"\n")
            for _ in range(BIG_ROWS // ROWS):
                fh.write(lines[1])
        sizes["big_rows"] = big
    for name, path in sizes.items():
        job = [sys.executable, "-c", _JOB, str(path), str(work / f"{name}.parquet"), str(current), "local", str(mb)]
        started = time.perf_counter()
        figures[f"{name}_peak_rss_mb"] = peak_rss_mb(job, work)
        figures[f"{name}_s"] = round(time.perf_counter() - started, 2)
    if "big_rows_peak_rss_mb" in figures:
        figures["growth"] = round(figures["big_rows_peak_rss_mb"] / figures["rows_peak_rss_mb"], 3)
        figures |= {"target_growth": 1.2, "target_peak_mb": 8192, "big_rows": BIG_ROWS // ROWS * ROWS}
    return figures


def _dask(raw: Path, work: Path) -> dict:
    from selfheal.core.config import DataQualityParams
    from selfheal.pipeline.partitioned import fix_partitioned

    mb = raw.stat().st_size / 4e6  # 4 partitions, as on a 2-worker cluster
    times: dict[str, list[float]] = {"local": [], "dask": []}
    for _ in range(REPEATS):
        for name in times:
            started = time.perf_counter()
            fix_partitioned(str(raw), work / f"{name}.parquet", "MedHouseVal", "regression", {}, {},
                            DataQualityParams(), name, partition_mb=mb)
            times[name].append(time.perf_counter() - started)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"local_s": round(med["local"], 2), "dask_2_workers_s": round(med["dask"], 2),
            "ratio": round(med["dask"] / med["local"], 3), "target_ratio": 1.5,
            "cluster_start_stop_s": round(statistics.median(_cluster_start_stop() for _ in range(REPEATS)), 2)}


def _cluster_start_stop() -> float:
    from selfheal.pipeline import engine

    started = time.perf_counter()
    with engine.mapper("dask", 2) as run:
        run(abs, [1])
    return time.perf_counter() - started


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="selfheal-bench-scale-") as tmp:
        work = Path(tmp)
        raw, current = work / "raw.csv", work / "current.csv"
        df = faulted(ROWS)
        df.to_csv(raw, index=False)
        shifted = df.sample(frac=1.0, random_state=1)
        for col in SHIFTED:
            shifted[col] = shifted[col] + 0.5 * shifted[col].std()
        shifted.to_csv(current, index=False)
        del df, shifted
        env_mb = raw.stat().st_size / 1e6
        return {
            "rows": ROWS,
            "raw_csv_mb": round(env_mb, 1),
            "repeats": REPEATS,
            "fix_vs_peer": _fix_vs_peer(raw, work),
            "drift": _drift(raw, current),
            "memory": _memory(raw, current, work, mb=64),
            "dask_vs_local": _dask(raw, work),
        }
