"""What each stage declares as DVC metrics, and the rounding that makes a seeded run write the same bytes.

A stage's full record (per-column detail, reasons, md5s, names of statistical tests) is a plain output that
selfheal reads; its declared metrics file holds only the flat, numeric few a person compares in
`dvc metrics show` / `dvc exp show`. Floats are rounded in both: threaded float sums differ in their last bits
between runs, which would otherwise show as a change in every `git status` and `dvc metrics diff`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from selfheal.core import atomic

DIGITS = 6

DATA_QUALITY = ("rows_in", "rows_out", "problems_before", "problems_after", "duplicates_removed")
TRAIN = ("train_score", "n_train", "n_holdout")
VALIDATION = ("metric", "passed", "r2", "rmse", "mae", "accuracy", "f1")
DRIFT = ("drift_detected", "drift_score", "number_of_drifted_columns", "prediction_drift_score",
         "target_drift_score", "current_rows")


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """`value` with every finite float rounded to `digits` decimals, through dicts and lists."""
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def flat(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The numeric (and boolean) values of `keys` in `record`, in that order; absent or non-numeric ones left out."""
    return {k: rounded(record[k]) for k in keys if isinstance(record.get(k), (int, float))}


def write(record_path: str | Path, metrics_path: str | Path, record: dict[str, Any], keys: tuple[str, ...]
          ) -> dict[str, Any]:
    """Write the rounded record and its declared metrics; returns the rounded record."""
    record = rounded(record)
    atomic.write_json(record_path, record)
    atomic.write_json(metrics_path, flat(record, keys))
    return record
