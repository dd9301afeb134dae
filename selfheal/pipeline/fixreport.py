"""The fix report (metrics/records/data_quality.json) and the guide's summary lines from it; no pandas, so the
all-numbers fix (numfix) and `selfheal fix-data` print them without importing it.
"""

from __future__ import annotations


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
    """The guide's log lines: "Filled MedInc missing values with median: 3.87", "Capped 45 outliers in HouseAge"."""
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


# what each per-column count is, and the data_quality switch that turns that fix off
_CHANGES = (("converted", "text made numbers", "fix_dtypes"),
            ("missing_filled", "missing filled", "fix_missing_values"),
            ("outliers_capped", "outliers capped", "cap_outliers"))


def changed_columns(report: dict) -> list[str]:
    """One line per column the fix changed values in: how many of each kind, and the data_quality switch that turns
    it off, so capping real values (say) is seen and can be turned off. Whole rows dropped are a line of their own."""
    lines = []
    for col, c in report["columns"].items():
        parts = [f"{c[key]:,} {what} ({switch})" for key, what, switch in _CHANGES if c.get(key)]
        if parts:
            lines.append(f"{col}: {', '.join(parts)}")
    dropped = [f"{report[key]:,} {what}" for key, what in (("duplicates_removed", "duplicates removed (drop_duplicates)"),
                                                           ("target_missing_dropped", "without a target dropped"))
               if report.get(key)]
    if dropped:
        lines.append(f"rows: {', '.join(dropped)}")
    return lines
