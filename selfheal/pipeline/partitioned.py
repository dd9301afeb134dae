"""fix_data on data larger than memory: the fixes of selfheal.pipeline.fixes, partition by partition, from merged
profiles; the output is a directory of parquet parts (one per input partition, in order).

The passes over the partitions, each a map on the engine (local or dask, one partition at a time per worker) and a
small merge on the driver, in the order of `fixes.fix`:
1. type each partition as `fix` does (text -> numbers, non-finite and out-of-range -> missing), spill it as
   parquet with a 64-bit hash per row (as checks.duplicated_rows), and return its counts;
2. on the driver: drop rows without a target and later copies of a row (first copy in partition order kept),
   then profile the kept rows of each partition and merge: medians and modes to fill with, and the IQR fences of
   the FILLED data (the fill value added `missing` times to each column's profile, profiles.filled);
3. fill and cap each partition, write it with which cells were capped and its row hashes, return the profile of
   the capped data; on the driver, drop the rows capping made identical (a global pass over the hashes, as in
   2). As `numfix._cap_until_stable`, this repeats (at most MAX_CAP_PASSES times) until a pass would change
   nothing: the merged profile gives the next fences, and when no row was dropped and every value already lies
   within them the next pass is known to be a no-op and is not run (after a drop, one more map profiles the
   rows left first; a last map drops the rows the final pass found when the bound is hit).
The report is `fix_report`'s; quantiles are exact up to profiles.EXACT_VALUES values per column and within the
KLL sketch's error above it, so on small data the result equals `fix`'s. From sketches, capped data is taken as
settled once a pass drops no row (capping leaves the quartiles where they were; a re-sketched estimate differs
only within the sketch's error).
"""

from __future__ import annotations

import functools
import itertools
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selfheal.core.config import DataQualityParams, ScaleParams
from selfheal.core.errors import DataError
from selfheal.pipeline import engine, profiles
from selfheal.pipeline.checks import Problem, Schema, infer_schema, out_of_range, row_hashes, typed
from selfheal.pipeline.fixreport import fix_report
from selfheal.pipeline.numfix import MAX_CAP_PASSES
from selfheal.pipeline.schema import fatal_shape, findings

BUCKET_ROWS = 2_000_000  # row hashes deduplicated at once on the driver (~50 MB): flat memory at any row count
Fences = dict[str, tuple[float, float]]
Masks = list[tuple[int, np.ndarray | None]]  # per partition: the rows to keep (None: all)


def wanted(source: str, scale: ScaleParams) -> bool:
    """The partitioned path is taken for engine: dask, an s3:// path, a directory or glob, or a CSV above
    scale.partition_mb; everything else keeps the in-memory `fix` and its single parquet file."""
    path = Path(source)
    if scale.engine == "dask" or engine.remote(source) or path.is_dir() or any(ch in source for ch in "*?["):
        return True
    return path.is_file() and path.stat().st_size > scale.partition_mb * 1e6  # a missing file: the usual error


def _part(folder: Path, i: int) -> Path:
    return folder / f"part-{i:05d}.parquet"


def _hashes(spill: Path, i: int) -> Path:
    return spill / f"hashes-{i:05d}.npy"


def _type_part(
    item: tuple[int, engine.Part], schema: Schema, dq: DataQualityParams, spill: Path
) -> dict[str, Any]:
    """Pass 1: type one partition as `fix` does, spill it and its row hashes; its counts and target mask."""
    i, part = item
    frame, parsed = typed(engine.read_part(part), schema)
    counts: dict[str, dict[str, int]] = {}
    for col, kind in schema.columns.items():
        c = counts[col] = {"missing_typed": int(frame[col].isna().sum())}
        if kind == "numeric":
            p = parsed[col]
            c |= {"text": p.text, "converted": p.n_converted, "non_finite": p.nonfinite}
            if p.converted is not None and not (dq.auto_fix_enabled and dq.fix_dtypes):
                frame.loc[p.converted, col] = np.nan
        c["missing"] = int(frame[col].isna().sum())
        if col in schema.ranges:
            bad = out_of_range(frame[col], schema.ranges[col])
            c["range_typed"] = int(bad.sum())
            if dq.auto_fix_enabled:
                frame.loc[bad, col] = np.nan
    frame.to_parquet(_part(spill, i), index=False)
    np.save(_hashes(spill, i), row_hashes(frame))
    return {"rows": len(frame), "counts": counts, "target": frame[schema.target].notna().to_numpy()}


def _profile_part(item: tuple[int, np.ndarray | None], kinds: dict[str, str], src: Path) -> profiles.Profile:
    """The profile of the columns `kinds` of one partition's kept rows."""
    i, keep = item
    frame = pd.read_parquet(_part(src, i), columns=list(kinds))
    return profiles.profile_frame(frame if keep is None else frame[keep], kinds)


@dataclass(frozen=True)
class Step:
    """One fill-and-cap map: read each partition from `src`, keep its masked rows, fill, cap, write it to `out`."""

    src: Path
    out: Path
    spill: Path  # also holds, per partition, which cells of its rows were capped already (each is counted once)
    numeric: tuple[str, ...]  # the features capping applies to
    fill: dict[str, Any] = field(default_factory=dict)
    fences: Fences = field(default_factory=dict)
    profile: bool = False  # return the profile of the numeric features as written (for the next fences)


def _fix_part(item: tuple[int, np.ndarray | None], schema: Schema, step: Step) -> dict[str, Any]:
    """Pass 3: fill and cap one partition with the global figures and write it; what was capped (cells not
    capped before), what is left, and (step.profile) the profile of its numeric features; its row hashes are
    spilled."""
    i, keep = item
    frame = pd.read_parquet(_part(step.src, i))
    flags = step.spill / f"capped-{i:05d}.npy"
    capped = np.load(flags) if flags.exists() else np.zeros((len(frame), len(step.numeric)), dtype=bool)
    if keep is not None:
        frame, capped = frame[keep].reset_index(drop=True), capped[keep]
    for col, value in step.fill.items():
        if value is not None:
            frame[col] = frame[col].fillna(value)
    new: dict[str, int] = {}
    for j, col in enumerate(step.numeric):
        if col in step.fences:
            lo, hi = step.fences[col]
            out = ((frame[col] < lo) | (frame[col] > hi)).to_numpy()
            new[col] = int((out & ~capped[:, j]).sum())
            capped[:, j] |= out
            frame[col] = frame[col].clip(lo, hi)
    frame.to_parquet(_part(step.out, i), index=False)
    np.save(flags, capped)
    left = {
        col: {
            "missing": int(frame[col].isna().sum()),
            "out_of_range": int(out_of_range(frame[col], schema.ranges[col]).sum()) if col in schema.ranges else 0,
        }
        for col in schema.columns
    }
    kinds = dict.fromkeys(step.numeric, "numeric")
    profile = profiles.profile_frame(frame[list(kinds)], kinds) if step.profile else None
    np.save(_hashes(step.spill, i), row_hashes(frame))
    return {"rows": len(frame), "capped": new, "left": left, "profile": profile}


def _per_part(mask: np.ndarray | None, sizes: list[int]) -> Masks:
    """A mask over all rows (partition order) cut into one mask per partition."""
    if mask is None:
        return [(i, None) for i in range(len(sizes))]
    bounds = np.cumsum([0, *sizes])
    return [(i, mask[a:b]) for i, (a, b) in enumerate(itertools.pairwise(bounds))]


def _later_copies(spill: Path, parts: list[dict[str, Any]]) -> np.ndarray:
    """Over all partitions in order: the rows that repeat an earlier one (by row hash, as duplicated_rows).

    Hash-partitioned, so the driver's memory stays flat whatever the row count: the copies of a row share its
    hash, so its bucket (hash modulo the bucket count); each bucket of at most about BUCKET_ROWS hashes is
    deduplicated on its own, in partition and row order, from the hashes the partitions spilled."""
    sizes = [p["rows"] for p in parts]
    offsets = np.cumsum([0, *sizes])
    out = np.zeros(int(offsets[-1]), dtype=bool)
    buckets = max(1, -(-len(out) // BUCKET_ROWS))
    for b in range(buckets):
        rows = []
        hashes = []
        for i in range(len(sizes)):
            h = np.load(_hashes(spill, i), mmap_mode="r")
            at = np.flatnonzero(h % np.uint64(buckets) == b)
            rows.append(at + offsets[i])
            hashes.append(h[at])
        later = pd.Series(np.concatenate(hashes)).duplicated().to_numpy()
        out[np.concatenate(rows)[later]] = True
    return out


def _sum(parts: list[dict[str, Any]], col: str, key: str) -> int:
    return sum(int(p["counts"][col].get(key, 0)) for p in parts)


def _problems_before(typed_parts: list[dict[str, Any]], schema: Schema, rows: int, n_dup: int) -> list[Problem]:
    counts = {col: {"missing": _sum(typed_parts, col, "missing_typed"), "text": _sum(typed_parts, col, "text"),
                    "non_finite": _sum(typed_parts, col, "non_finite"),
                    "out_of_range": _sum(typed_parts, col, "range_typed")} for col in schema.columns}
    return findings(schema, rows, counts, n_dup)


def _open_after(fixed: list[dict[str, Any]], schema: Schema, rows: int, n_dup: int) -> list[str]:
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
    if n_dup:
        out.append(f"{n_dup} duplicate row(s)")
    return out


def _report_columns(typed_parts: list[dict[str, Any]], schema: Schema, dq: DataQualityParams) -> dict[str, dict]:
    """The per-column counts of pass 1, keyed as `fix` reports them; the fixes add theirs."""
    cols: dict[str, dict[str, Any]] = {}
    for col, kind in schema.columns.items():
        info = cols[col] = {"kind": kind}
        if kind == "numeric":
            converted = _sum(typed_parts, col, "converted") if dq.auto_fix_enabled and dq.fix_dtypes else 0
            info.update(dtype_mismatches=_sum(typed_parts, col, "text"), converted=converted,
                        non_finite=_sum(typed_parts, col, "non_finite"))
        info["missing"] = _sum(typed_parts, col, "missing")
        if col in schema.ranges:
            info["out_of_range"] = _sum(typed_parts, col, "range_typed")
    return cols


def _fill_plan(kept: profiles.Profile, schema: Schema, cols: dict[str, dict]) -> dict[str, Any]:
    """Per feature: the median / mode of the kept rows to fill with (None: nothing to fill, or nothing to fill
    from); reported as `numfix.fix_columns does."""
    fill: dict[str, Any] = {}
    for col in schema.features:
        p, info = kept.columns[col], cols[col]
        info["missing_filled"] = p.missing
        fill[col] = (p.quantile(0.5) if p.kind == "numeric" else p.mode()) if p.missing and p.n else None
        if fill[col] is not None:
            info["fill_value"] = float(fill[col]) if p.kind == "numeric" else str(fill[col])
    return fill


def _fences(merged: profiles.Profile, numeric: tuple[str, ...], k: float) -> Fences:
    return {c: f for c in numeric if (f := profiles.iqr_fences(merged.columns[c], k))}


def _idle(merged: profiles.Profile, fences: Fences) -> bool:
    """Whether a pass at `fences` would cap nothing: every value of an exact column lies within them (sketched
    columns are taken as settled, see the module docstring)."""
    return all(p.values is None or (lo <= p.quantile(0.0) and p.quantile(1.0) <= hi)
               for p, (lo, hi) in ((merged.columns[c], f) for c, f in fences.items()))


def _cap_until_stable(
    run: engine.Mapper, schema: Schema, dq: DataQualityParams, step: Step, masks: Masks, cols: dict[str, dict]
) -> tuple[list[dict[str, Any]], int]:
    """`numfix._cap_until_stable` over partitions: cap, then drop the rows capping made identical, until a pass
    changes nothing (at most MAX_CAP_PASSES); the last pass's results and the rows dropped."""
    capped, dups = dict.fromkeys(step.numeric, 0), 0
    for n_pass in range(1, MAX_CAP_PASSES + 1):
        fixed = run(functools.partial(_fix_part, schema=schema, step=step), masks)
        for col, (lo, hi) in step.fences.items():
            cols[col].update(lower=round(lo, 6), upper=round(hi, 6))
        for p in fixed:
            for col, n in p["capped"].items():
                capped[col] += n
        dup = _later_copies(step.spill, fixed) if dq.drop_duplicates else np.zeros(0, dtype=bool)
        dups += int(dup.sum())
        masks = _per_part(~dup if dup.any() else None, [p["rows"] for p in fixed])
        if n_pass == MAX_CAP_PASSES:
            break
        if dup.any():  # the rows left, profiled before the next fences are taken
            kinds = dict.fromkeys(step.numeric, "numeric")
            merged = profiles.merge(run(functools.partial(_profile_part, kinds=kinds, src=step.out), masks))
        else:
            merged = profiles.merge([p["profile"] for p in fixed])
        fences = _fences(merged, step.numeric, dq.outlier_threshold_iqr)
        if not dup.any() and _idle(merged, fences):  # the next pass would only confirm: report what it would
            for col, (lo, hi) in fences.items():
                if merged.columns[col].values is not None:
                    cols[col].update(lower=round(lo, 6), upper=round(hi, 6))
            break
        step = replace(step, src=step.out, fill={}, fences=fences)
    if any(m is not None for _, m in masks):  # the bound was hit with rows still to drop
        fixed = run(functools.partial(_fix_part, schema=schema, step=replace(step, src=step.out, fill={},
                                                                              fences={}, profile=False)), masks)
    for col in step.numeric:
        cols[col]["outliers_capped"] = capped[col]
    return fixed, dups


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
    out = Path(out).resolve()  # the workers of a dask scheduler elsewhere write there from their own directory
    parts = engine.partitions(source, partition_mb)
    first = engine.read_part(parts[0])
    schema = infer_schema(first, target, task, overrides, ranges)
    shape = fatal_shape(list(first.columns), len(first), schema)
    if shape and shape.kind != "no_rows":
        raise DataError(f"{source}: {shape.message}")
    out = Path(out)
    staging, spill = out.with_name(out.name + ".partial"), out.with_name(out.name + ".spill")
    for d in (staging, spill):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    numeric = tuple(c for c in schema.features if schema.columns[c] == "numeric")
    step = Step(spill, staging, spill, numeric)
    try:
        with engine.mapper(engine_name, workers) as run:
            typed_parts = run(functools.partial(_type_part, schema=schema, dq=dq, spill=spill), list(enumerate(parts)))
            rows_in = sum(p["rows"] for p in typed_parts)
            if not rows_in:
                raise DataError(f"{source}: no data rows")
            dup_all = _later_copies(spill, typed_parts)
            before = _problems_before(typed_parts, schema, rows_in, int(dup_all.sum()))
            fatal = next((p for p in before if p.fatal), None)
            if fatal:
                raise DataError(f"{source}: {fatal.message}")
            cols = _report_columns(typed_parts, schema, dq)
            keep = None
            target_dropped = dups = 0
            if dq.auto_fix_enabled:
                keep = np.concatenate([p["target"] for p in typed_parts])
                target_dropped = int((~keep).sum())
                if dq.drop_duplicates:
                    dup = dup_all & keep
                    dups = int(dup.sum())
                    keep &= ~dup
            masks = _per_part(keep, [p["rows"] for p in typed_parts])
            if dq.auto_fix_enabled and (dq.fix_missing_values or dq.cap_outliers):
                kinds = {c: schema.columns[c] for c in schema.features}
                kept = profiles.merge(run(functools.partial(_profile_part, kinds=kinds, src=spill), masks))
                fill = _fill_plan(kept, schema, cols) if dq.fix_missing_values else {}
                step = replace(step, fill=fill)
            if dq.auto_fix_enabled and dq.cap_outliers:
                filled = profiles.Profile(kept.rows, {  # the fences are measured on the data as it leaves
                    c: profiles.filled(kept.columns[c], fill[c]) if fill.get(c) is not None else kept.columns[c]
                    for c in numeric
                })
                step = replace(step, fences=_fences(filled, numeric, dq.outlier_threshold_iqr), profile=True)
                fixed, capped_dups = _cap_until_stable(run, schema, dq, step, masks, cols)
                dups += capped_dups
            else:
                fixed = run(functools.partial(_fix_part, schema=schema, step=step), masks)
            dups_left = int(_later_copies(spill, fixed).sum())
        shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        staging.rename(out)
    finally:
        shutil.rmtree(spill, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
    rows_out = sum(p["rows"] for p in fixed)
    after = _open_after(fixed, schema, rows_out, dups_left)
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
