"""fix_data on data larger than memory: the fixes of selfheal.pipeline.fixes, partition by partition, from merged
profiles; the output is a directory of parquet parts (one per input partition, in order).

Three passes over the partitions, each a map on the engine (local or dask) and a small merge on the driver:
1. type each partition as `fix` does (text -> numbers, out-of-range -> missing), spill it as parquet, and return
   its counts and a 64-bit hash per row (as checks.duplicated_rows);
2. on the driver: drop rows without a target and later copies of a row (first copy in partition order kept),
   then profile the kept rows of each partition and merge: IQR fences, medians and modes for the whole data;
3. cap and fill each partition with those global figures and write it, counting what is left.
The order of the fixes and the report are those of `fixes.fix`; quantiles are exact up to profiles.EXACT_VALUES
rows per column and within the KLL sketch's error above it, so on small data the result equals `fix`'s.
"""

from __future__ import annotations

import functools
import itertools
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selfheal.core.config import DataQualityParams, ScaleParams
from selfheal.core.errors import DataError
from selfheal.pipeline import engine, profiles
from selfheal.pipeline.checks import Problem, Schema, fatal_shape, infer_schema, out_of_range, typed
from selfheal.pipeline.fixes import fix_report


def wanted(source: str, scale: ScaleParams) -> bool:
    """The partitioned path is taken for engine: dask, a directory or glob, or a CSV above scale.partition_mb;
    everything else keeps the in-memory `fix` and its single parquet file."""
    path = Path(source)
    if scale.engine == "dask" or path.is_dir() or any(ch in source for ch in "*?["):
        return True
    return path.is_file() and path.stat().st_size > scale.partition_mb * 1e6  # a missing file: the usual error


def _hash(frame: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _spill(spill: Path, i: int) -> Path:
    return spill / f"part-{i:05d}.parquet"


def _type_part(
    item: tuple[int, engine.Part], schema: Schema, dq: DataQualityParams, spill: Path
) -> dict[str, Any]:
    """Pass 1: type one partition as `fix` does, spill it; its counts, row hashes and target mask."""
    i, part = item
    frame, parsed = typed(engine.read_part(part), schema)
    counts: dict[str, dict[str, int]] = {}
    for col, kind in schema.columns.items():
        c = counts[col] = {"missing_typed": int(frame[col].isna().sum())}
        if kind == "numeric":
            p = parsed[col]
            c |= {"text": p.text, "converted": p.n_converted}
            if p.converted is not None and not (dq.auto_fix_enabled and dq.fix_dtypes):
                frame.loc[p.converted, col] = np.nan
        c["missing"] = int(frame[col].isna().sum())
        if col in schema.ranges:
            c["range_typed"] = int(out_of_range(frame[col], schema.ranges[col]).sum())
            bad = out_of_range(frame[col], schema.ranges[col])
            if dq.auto_fix_enabled:
                frame.loc[bad, col] = np.nan
    frame.to_parquet(_spill(spill, i), index=False)
    return {"rows": len(frame), "counts": counts, "hashes": _hash(frame), "target": frame[schema.target].notna()}


def _profile_part(item: tuple[int, np.ndarray], schema: Schema, spill: Path) -> profiles.Profile:
    """Pass 2: the profile of one partition's kept rows (features only)."""
    i, keep = item
    frame = pd.read_parquet(_spill(spill, i))[keep]
    return profiles.profile_frame(frame, {c: schema.columns[c] for c in schema.features})


def _fix_part(
    item: tuple[int, np.ndarray], schema: Schema, plan: dict[str, dict[str, Any]], out: Path, spill: Path
) -> dict[str, Any]:
    """Pass 3: cap and fill one partition with the global figures, write it; what was changed and what is left."""
    i, keep = item
    frame = pd.read_parquet(_spill(spill, i))[keep].reset_index(drop=True)
    done: dict[str, dict[str, int]] = {}
    for col, todo in plan.items():
        d = done[col] = {}
        if "fences" in todo:
            lo, hi = todo["fences"]
            d["outliers_capped"] = int(((frame[col] < lo) | (frame[col] > hi)).sum())
            frame[col] = frame[col].clip(lo, hi)
        if "fill" in todo:
            d["missing_filled"] = int(frame[col].isna().sum())
            if todo["fill"] is not None:
                frame[col] = frame[col].fillna(todo["fill"])
    frame.to_parquet(out / f"part-{i:05d}.parquet", index=False)
    left = {
        col: {
            "missing": int(frame[col].isna().sum()),
            "out_of_range": int(out_of_range(frame[col], schema.ranges[col]).sum()) if col in schema.ranges else 0,
        }
        for col in schema.columns
    }
    return {"rows": len(frame), "done": done, "left": left, "hashes": _hash(frame)}


def _sum(parts: list[dict[str, Any]], col: str, key: str) -> int:
    return sum(int(p["counts"][col].get(key, 0)) for p in parts)


def _problems_before(typed_parts: list[dict[str, Any]], schema: Schema, rows: int, n_dup: int) -> list[Problem]:
    found = []
    for col in schema.columns:
        missing = _sum(typed_parts, col, "missing_typed")
        if missing == rows:
            found.append(Problem(col, "empty_column", missing, f"column {col!r} is entirely empty", fatal=True))
            continue
        text = _sum(typed_parts, col, "text")
        if text:
            found.append(Problem(col, "dtype_mismatch", text, f"{col}: {text} text value(s) in a numeric column"))
        if missing:
            found.append(Problem(col, "missing", missing, f"{col}: {missing} missing value(s)"))
        n = _sum(typed_parts, col, "range_typed")
        if n:
            lo, hi = schema.ranges[col]
            found.append(Problem(col, "out_of_range", n, f"{col}: {n} value(s) outside [{lo:g}, {hi:g}]"))
    if n_dup:
        found.append(Problem(None, "duplicates", n_dup, f"{n_dup} duplicate row(s)"))
    return found


def _open_after(fixed: list[dict[str, Any]], schema: Schema, rows: int) -> list[str]:
    out = []
    for col in schema.columns:
        missing = sum(p["left"][col]["missing"] for p in fixed)
        bad = sum(p["left"][col]["out_of_range"] for p in fixed)
        if rows and missing == rows:
            out.append(f"column {col!r} is entirely empty")
            continue
        if missing:
            out.append(f"{col}: {missing} missing value(s)")
        if bad:
            lo, hi = schema.ranges[col]
            out.append(f"{col}: {bad} value(s) outside [{lo:g}, {hi:g}]")
    n_dup = int(pd.Series(np.concatenate([p["hashes"] for p in fixed])).duplicated().sum()) if fixed else 0
    if n_dup:
        out.append(f"{n_dup} duplicate row(s)")
    return out


def _plan(merged: profiles.Profile, schema: Schema, dq: DataQualityParams) -> dict[str, dict[str, Any]]:
    """Per feature: the fences to cap at and the value to fill with, from the merged profile."""
    plan: dict[str, dict[str, Any]] = {}
    for col in schema.features:
        todo = plan[col] = {}
        p = merged.columns[col]
        if not dq.auto_fix_enabled:
            continue
        if dq.cap_outliers and p.kind == "numeric":
            fences = profiles.iqr_fences(p, dq.outlier_threshold_iqr)
            if fences:
                todo["fences"] = fences
        if dq.fix_missing_values:
            todo["fill"] = (p.quantile(0.5) if p.kind == "numeric" else p.mode()) if p.missing and p.n else None
    return plan


def fix_partitioned(
    source: str,
    out: str | Path,
    target: str,
    task: str,
    overrides: dict,
    ranges: dict,
    dq: DataQualityParams,
    engine_name: str = "local",
    partition_mb: float = 64,
    workers: int = 2,
) -> dict[str, Any]:
    """Fix `source` (file, directory or glob) into the parquet directory `out`; returns fix()'s report."""
    parts = engine.partitions(source, partition_mb)
    first = engine.read_part(parts[0])
    schema = infer_schema(first, target, task, overrides, ranges)
    shape = fatal_shape(first, schema)
    if shape and shape.kind != "no_rows":
        raise DataError(f"{source}: {shape.message}")
    out = Path(out)
    staging, spill = out.with_name(out.name + ".partial"), out.with_name(out.name + ".spill")
    for d in (staging, spill):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    try:
        with engine.mapper(engine_name, workers) as run:
            typed_parts = run(functools.partial(_type_part, schema=schema, dq=dq, spill=spill), list(enumerate(parts)))
            rows_in = sum(p["rows"] for p in typed_parts)
            if not rows_in:
                raise DataError(f"{source}: no data rows")
            hashes = np.concatenate([p["hashes"] for p in typed_parts])
            dup_all = pd.Series(hashes).duplicated().to_numpy()
            before = _problems_before(typed_parts, schema, rows_in, int(dup_all.sum()))
            fatal = next((p for p in before if p.fatal), None)
            if fatal:
                raise DataError(f"{source}: {fatal.message}")
            keep = np.ones(rows_in, dtype=bool)
            target_dropped = dups = 0
            if dq.auto_fix_enabled:
                keep = np.concatenate([p["target"].to_numpy() for p in typed_parts])
                target_dropped = int((~keep).sum())
                if dq.drop_duplicates:
                    dup = dup_all & keep
                    dups = int(dup.sum())
                    keep &= ~dup
            bounds = np.cumsum([0] + [p["rows"] for p in typed_parts])
            keeps = [(i, keep[a:b]) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
            merged = profiles.merge(run(functools.partial(_profile_part, schema=schema, spill=spill), keeps))
            plan = _plan(merged, schema, dq)
            fixed = run(functools.partial(_fix_part, schema=schema, plan=plan, out=staging, spill=spill), keeps)
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    rows_out = sum(p["rows"] for p in fixed)
    cols: dict[str, dict[str, Any]] = {}
    for col, kind in schema.columns.items():
        info = cols[col] = {"kind": kind}
        if kind == "numeric":
            converted = _sum(typed_parts, col, "converted") if dq.auto_fix_enabled and dq.fix_dtypes else 0
            info.update(dtype_mismatches=_sum(typed_parts, col, "text"), converted=converted)
        info["missing"] = _sum(typed_parts, col, "missing")
        if col in schema.ranges:
            info["out_of_range"] = _sum(typed_parts, col, "range_typed")
        todo = plan.get(col, {})
        if "fences" in todo:
            info["outliers_capped"] = sum(p["done"][col]["outliers_capped"] for p in fixed)
            info.update(lower=round(todo["fences"][0], 6), upper=round(todo["fences"][1], 6))
        if "fill" in todo:
            info["missing_filled"] = filled = sum(p["done"][col]["missing_filled"] for p in fixed)
            if filled:
                info["fill_value"] = float(todo["fill"]) if kind == "numeric" else str(todo["fill"])
    after = _open_after(fixed, schema, rows_out)
    report = fix_report(rows_in, rows_out, len(before), after, dups, target_dropped, cols)
    return report | {"engine": engine_name, "partitions": len(parts)}


def _profile_read(part: engine.Part, kinds: dict[str, str]) -> profiles.Profile:
    frame, _ = typed(engine.read_part(part), Schema(kinds, target=""))
    return profiles.profile_frame(frame, kinds)


def profile_source(
    source: str, kinds: dict[str, str], engine_name: str = "local", partition_mb: float = 64, workers: int = 2
) -> profiles.Profile:
    """The merged profile of the columns `kinds` of `source` (file, directory or glob), read as fix_data reads
    them (padded numbers parse, placeholders and text in numeric columns are missing)."""
    parts = engine.partitions(source, partition_mb)
    with engine.mapper(engine_name, workers) as run:
        return profiles.merge(run(functools.partial(_profile_read, kinds=kinds), parts))
