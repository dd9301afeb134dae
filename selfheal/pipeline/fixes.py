"""The data fixes: text to numbers, out-of-range and missing values, duplicates, outliers.

Frame in, frame out, no DVC: the fix_data stage and the in-place `selfheal fix-data` command share it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from selfheal.core.config import DataQualityParams
from selfheal.core.errors import DataError
from selfheal.pipeline.checks import Schema, duplicated_rows, fatal_shape, out_of_range, problems, row_hashes, typed

HAD_MISSING = "selfheal_had_missing"  # DataFrame.attrs key: the features that had missing values before fixing
MAX_CAP_PASSES = 10  # capping converges in one or two passes; the bound only guards against pathological data


def _iqr_fences(values: pd.Series, k: float) -> tuple[float, float] | None:
    """Q1 - k*IQR, Q3 + k*IQR; None when IQR is 0 (a constant or mostly-one-value column has no outliers)."""
    q1, q3 = values.quantile([0.25, 0.75])
    if not np.isfinite(q3 - q1) or q3 == q1:
        return None
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def _fill(frame: pd.DataFrame, schema: Schema, cols: dict[str, dict]) -> None:
    """Missing features -> median (numeric) / mode (categorical), in place. Filling first means the fences are
    measured on the data as it leaves: a second run on the output then sees the same quartiles."""
    for col in schema.features:
        info, values = cols[col], frame[col]
        n = int(values.isna().sum())
        info["missing_filled"] = n
        if n:
            fill = values.median() if info["kind"] == "numeric" else values.mode().iloc[0]
            info["fill_value"] = float(fill) if info["kind"] == "numeric" else str(fill)
            frame[col] = values.fillna(fill)


def _cap_until_stable(frame: pd.DataFrame, schema: Schema, dq: DataQualityParams, cols: dict[str, dict],
                      dups: int) -> tuple[pd.DataFrame, int, np.ndarray | None]:
    """Cap numeric features at their IQR fences, then drop the rows capping made identical; repeat until a pass
    changes nothing, so the output is a fixed point: `fix` on its own output caps nothing and drops nothing.

    Capping leaves the quartiles where they were, so the second pass usually only confirms; it moves only when
    rows were dropped. Each cell is counted once however many passes touch it. Also returns the row hashes of
    the frame returned when the last pass took them (it changed nothing after), for the final check.
    """
    numeric = [c for c in schema.features if cols[c]["kind"] == "numeric"]
    capped = {col: np.zeros(len(frame), dtype=bool) for col in numeric}
    rows = np.arange(len(frame))  # each row's position in the frame the first pass saw
    hashes = None
    for _ in range(MAX_CAP_PASSES):
        changed = False
        for col in numeric:
            values = frame[col]
            fences = _iqr_fences(values, dq.outlier_threshold_iqr)
            if fences:
                cols[col].update(lower=round(fences[0], 6), upper=round(fences[1], 6))
                out = ((values < fences[0]) | (values > fences[1])).to_numpy()
                if out.any():
                    capped[col][rows[out]] = True
                    frame[col] = values.clip(*fences)
                    changed = True
        if dq.drop_duplicates:
            hashes = row_hashes(frame)
            dup = duplicated_rows(frame, hashes)
            if dup.any():
                dups += int(dup.sum())
                frame, rows = frame[~dup], rows[~dup]
                changed = True
        if not changed:
            break
    for col in numeric:
        cols[col]["outliers_capped"] = int(capped[col].sum())
    return frame, dups, None if changed else hashes


def fix(df: pd.DataFrame, schema: Schema, dq: DataQualityParams, source: str = "data") -> tuple[pd.DataFrame, dict]:
    """Apply the enabled fixes; returns the typed frame and a report (metrics/records/data_quality.json).

    Order (it converges: run on its own output, `fix` changes nothing): numbers written as text are converted
    (fix_dtypes; when off they count as missing, never guessed), non-finite numbers (1e309, inf) and out-of-range
    values (data.ranges) become missing, rows without a target are dropped (a label cannot be filled),
    duplicates are dropped, missing features are filled (median / mode), then outliers in numeric features are
    capped at the IQR fences of that data and the rows capping made identical are dropped (see
    `_cap_until_stable`). The target is never filled or capped.
    With auto_fix_enabled=false nothing is changed: the data is only typed (text in a numeric column counts
    as missing) and written, and `valid_after` says whether it is still invalid.
    Data that cannot be fixed (no target column, an entirely empty column, no rows) raises DataError.
    """
    shape = fatal_shape(df, schema)
    if shape:
        raise DataError(f"{source}: {shape.message}")
    frame, parsed = typed(df, schema)
    hashes: np.ndarray | None = row_hashes(frame)  # of the typed frame, while no cell of it has changed
    before = problems(frame, parsed, schema, hashes)
    fatal = next((p for p in before if p.fatal), None)
    if fatal:
        raise DataError(f"{source}: {fatal.message}")
    auto = dq.auto_fix_enabled
    cols: dict[str, dict] = {}
    for col, kind in schema.columns.items():
        info = cols[col] = {"kind": kind}
        if kind == "numeric":
            p = parsed[col]
            converted = p.n_converted if auto and dq.fix_dtypes else 0
            info.update(dtype_mismatches=p.text, converted=converted, non_finite=p.nonfinite)
            if p.converted is not None and not converted:
                frame.loc[p.converted, col] = np.nan  # numbers written as text are only read when fix_dtypes
                hashes = None
        info["missing"] = int(frame[col].isna().sum())
        if col in schema.ranges:
            bad = out_of_range(frame[col], schema.ranges[col])
            info["out_of_range"] = int(bad.sum())
            if auto and bad.any():
                frame.loc[bad, col] = np.nan
                hashes = None

    rows_in = len(frame)
    target_dropped = dups = 0
    if auto:
        # a copy of a row shares its target, so both masks can be taken on the whole frame
        keep = frame[schema.target].notna().to_numpy().copy()
        target_dropped = int((~keep).sum())
        if dq.drop_duplicates:
            dup = duplicated_rows(frame, hashes) & keep
            dups = int(dup.sum())
            keep &= ~dup
        if not keep.all():
            frame = frame[keep]
        hashes = None  # rows are dropped, cells filled and capped below
        if dq.fix_missing_values:
            _fill(frame, schema, cols)
        if dq.cap_outliers:
            frame, dups, hashes = _cap_until_stable(frame, schema, dq, cols, dups)
    frame = frame.reset_index(drop=True)
    # carried in the parquet file's metadata to train, which records these columns as nullable in model.json
    frame.attrs[HAD_MISSING] = [c for c in schema.features if cols[c].get("missing_filled") or frame[c].isna().any()]
    after = problems(frame, {}, schema, hashes)  # frame is typed already: no text left to count
    return frame, fix_report(rows_in, len(frame), len(before), [p.message for p in after], dups, target_dropped, cols)


def fix_report(
    rows_in: int, rows_out: int, n_before: int, after: list[str], dups: int, target_dropped: int, cols: dict
) -> dict:
    """metrics/data_quality.json, from the in-memory fix or the partitioned one."""
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "valid_before": not n_before,
        "valid_after": not after,
        "problems_before": n_before,
        "problems_after": len(after),
        "duplicates_removed": dups,
        "target_missing_dropped": target_dropped,
        "open_problems": after,
        "columns": cols,
    }


def summary_lines(report: dict) -> list[str]:
    """The seed's log lines: "Filled MedInc missing values with median: 3.87", "Capped 45 outliers in HouseAge"."""
    lines = []
    for col, c in report["columns"].items():
        unreadable = c.get("dtype_mismatches", 0) - c.get("converted", 0)
        if c.get("converted"):
            more = f" ({unreadable} more were not numbers: treated as missing)" if unreadable else ""
            lines.append(f"Converted {c['converted']} text values in {col} to numbers{more}")
        elif unreadable:
            lines.append(f"Treated {unreadable} non-numeric values in {col} as missing")
        if c.get("non_finite"):
            lines.append(f"Treated {c['non_finite']} non-finite values (inf, 1e309) in {col} as missing")
        if c.get("out_of_range"):
            lines.append(f"Treated {c['out_of_range']} out-of-range values in {col} as missing")
    if report["target_missing_dropped"]:
        lines.append(f"Dropped {report['target_missing_dropped']} rows without a target value")
    if report["duplicates_removed"]:
        lines.append(f"Removed {report['duplicates_removed']} duplicate rows")
    for col, c in report["columns"].items():
        if c.get("outliers_capped"):
            lines.append(f"Capped {c['outliers_capped']} outliers in {col}")
    for col, c in report["columns"].items():
        if c.get("missing_filled"):
            numeric = c["kind"] == "numeric"
            how, fill = ("median", f"{round(c['fill_value'], 2):g}") if numeric else ("mode", c["fill_value"])
            lines.append(f"Filled {col} missing values with {how}: {fill} ({c['missing_filled']} values)")
    verdict = "valid" if report["valid_after"] else f"still invalid ({'; '.join(report['open_problems'])})"
    lines.append(f"Data {verdict}: {report['rows_in']:,} rows in, {report['rows_out']:,} rows out")
    return lines
