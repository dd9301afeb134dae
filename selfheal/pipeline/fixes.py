"""The data fixes: text to numbers, out-of-range and missing values, duplicates, outliers.

Frame in, frame out, no DVC: the fix_data stage and the in-place `selfheal fix-data` command share it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from selfheal.core.config import DataQualityParams
from selfheal.core.errors import DataError
from selfheal.pipeline.checks import Schema, duplicated_rows, fatal_shape, out_of_range, problems, typed


def _iqr_fences(values: pd.Series, k: float) -> tuple[float, float] | None:
    """Q1 - k*IQR, Q3 + k*IQR; None when IQR is 0 (a constant or mostly-one-value column has no outliers)."""
    q1, q3 = values.quantile([0.25, 0.75])
    if not np.isfinite(q3 - q1) or q3 == q1:
        return None
    return float(q1 - k * (q3 - q1)), float(q3 + k * (q3 - q1))


def fix(df: pd.DataFrame, schema: Schema, dq: DataQualityParams, source: str = "data") -> tuple[pd.DataFrame, dict]:
    """Apply the enabled fixes; returns the typed frame and a report (metrics/records/data_quality.json).

    Order: numbers written as text are converted (fix_dtypes; when off they count as missing, never guessed),
    out-of-range values (data.ranges) become missing, rows without a target are dropped (a label cannot be
    filled), duplicates are dropped, outliers in numeric features are capped at the IQR fences, then missing
    features are filled (median / mode). The target is never filled or capped.
    With auto_fix_enabled=false nothing is changed: the data is only typed (text in a numeric column counts
    as missing) and written, and `valid_after` says whether it is still invalid.
    Data that cannot be fixed (no target column, an entirely empty column, no rows) raises DataError.
    """
    shape = fatal_shape(df, schema)
    if shape:
        raise DataError(f"{source}: {shape.message}")
    frame, parsed = typed(df, schema)
    before = problems(frame, parsed, schema)
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
            info.update(dtype_mismatches=p.text, converted=converted)
            if p.converted is not None and not converted:
                frame.loc[p.converted, col] = np.nan  # numbers written as text are only read when fix_dtypes
        info["missing"] = int(frame[col].isna().sum())
        if col in schema.ranges:
            bad = out_of_range(frame[col], schema.ranges[col])
            info["out_of_range"] = int(bad.sum())
            if auto:
                frame.loc[bad, col] = np.nan

    rows_in, target_dropped, dups = len(frame), 0, 0
    if auto:
        # a copy of a row shares its target, so both masks can be taken on the whole frame
        keep = frame[schema.target].notna().to_numpy().copy()
        target_dropped = int((~keep).sum())
        if dq.drop_duplicates:
            dup = duplicated_rows(frame) & keep
            dups = int(dup.sum())
            keep &= ~dup
        if not keep.all():
            frame = frame[keep]
    for col in schema.features:
        info, values = cols[col], frame[col]
        if auto and dq.cap_outliers and info["kind"] == "numeric":
            fences = _iqr_fences(values, dq.outlier_threshold_iqr)
            if fences:
                info.update(outliers_capped=int(((values < fences[0]) | (values > fences[1])).sum()))
                info.update(lower=round(fences[0], 6), upper=round(fences[1], 6))
                values = frame[col] = values.clip(*fences)
        if auto and dq.fix_missing_values:
            n = int(values.isna().sum())
            info["missing_filled"] = n
            if n:
                fill = values.median() if info["kind"] == "numeric" else values.mode().iloc[0]
                info["fill_value"] = float(fill) if info["kind"] == "numeric" else str(fill)
                frame[col] = values.fillna(fill)
    frame = frame.reset_index(drop=True)
    after = problems(frame, {}, schema)  # frame is typed already: no text left to count
    report = {
        "rows_in": rows_in,
        "rows_out": len(frame),
        "valid_before": not before,
        "valid_after": not after,
        "problems_before": len(before),
        "problems_after": len(after),
        "duplicates_removed": dups,
        "target_missing_dropped": target_dropped,
        "open_problems": [p.message for p in after],
        "columns": cols,
    }
    return frame, report


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
