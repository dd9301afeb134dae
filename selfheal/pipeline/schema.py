"""The schema of a data set and its problems, without pandas: shared by the pandas checks (checks.py), the
partitioned fix and the all-numbers fix on arrays (numfix.py), so each says the same things the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from selfheal.core.errors import ConfigError


@dataclass
class Schema:
    """Column kinds ("numeric" | "categorical") in file order, the target and declared valid ranges."""

    columns: dict[str, str]
    target: str
    task: str = "regression"
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [c for c in self.columns if c != self.target]


def schema_of(columns: list[str], looks_numeric: Callable[[str], bool], target: str, task: str = "regression",
              overrides: dict | None = None, ranges: dict | None = None) -> Schema:
    """The schema of data with `columns`: a column's kind is `overrides` (data.columns) or, when not declared,
    numeric when `looks_numeric(column)`; unknown columns and unusable ranges are a ConfigError."""
    overrides, ranges = overrides or {}, ranges or {}
    for key, names in (("data.columns", overrides), ("data.ranges", ranges)):
        unknown = sorted(set(names) - set(columns))
        if unknown:
            raise ConfigError(f"params.yaml: {key}: unknown column(s) {unknown}; the data has {list(columns)}")
    kinds = {c: overrides.get(c) or ("numeric" if looks_numeric(c) else "categorical") for c in columns}
    checked = {}
    for col, (lo, hi) in ranges.items():
        if kinds[col] != "numeric":
            raise ConfigError(f"params.yaml: data.ranges: {col} is categorical; ranges apply to numeric columns")
        if lo > hi:
            raise ConfigError(f"params.yaml: data.ranges: {col}: lower bound {lo} is above upper bound {hi}")
        checked[col] = (float(lo), float(hi))
    return Schema(kinds, target, task, checked)


@dataclass
class Parsed:
    """A column read as numbers. `text` cells were not plain numbers; `converted` marks those that parsed once
    stripped of spaces (None when no cell needed it); `nonfinite` numbers (1e309 overflows to inf) are missing."""

    values: np.ndarray
    text: int = 0
    converted: np.ndarray | None = None
    nonfinite: int = 0

    @property
    def n_converted(self) -> int:
        return 0 if self.converted is None else int(self.converted.sum())


@dataclass
class Problem:
    """One finding of `validate`; a fatal one means the data cannot be fixed."""

    column: str | None
    kind: str  # target_missing | target_not_numeric | no_rows | empty_column | dtype_mismatch | non_finite |
    #            missing | out_of_range | duplicates
    count: int
    message: str
    fatal: bool = False


def findings(schema: Schema, rows: int, counts: Mapping[str, Mapping[str, int]], n_dup: int) -> list[Problem]:
    """The problems, from each column's counts of "missing", "text", "non_finite" and "out_of_range" cells (an
    absent key counts 0) and the number of duplicate rows."""
    found = []
    for col in schema.columns:
        c = counts[col]
        missing = c.get("missing", 0)
        if missing == rows:
            found.append(Problem(col, "empty_column", missing, f"column {col!r} is entirely empty", fatal=True))
            continue
        n = c.get("text", 0)
        if n:
            found.append(Problem(col, "dtype_mismatch", n, f"{col}: {n} text value(s) in a numeric column"))
        n = c.get("non_finite", 0)
        if n:
            found.append(Problem(col, "non_finite", n, f"{col}: {n} non-finite value(s) (inf or beyond float range)"))
        if missing:
            found.append(Problem(col, "missing", missing, f"{col}: {missing} missing value(s)"))
        n = c.get("out_of_range", 0)
        if n:
            lo, hi = schema.ranges[col]
            found.append(Problem(col, "out_of_range", n, f"{col}: {n} value(s) outside [{lo:g}, {hi:g}]"))
    if n_dup:
        found.append(Problem(None, "duplicates", n_dup, f"{n_dup} duplicate row(s)"))
    return found


def fatal_shape(columns: list[str], rows: int, schema: Schema) -> Problem | None:
    """The problems no fix can get past, found without reading values: no target column, no rows, a text
    target for regression."""
    if schema.target not in columns:
        return Problem(schema.target, "target_missing", 1, f"target column {schema.target!r} not found "
                       f"(columns: {', '.join(map(str, columns))})", fatal=True)
    if rows == 0:
        return Problem(None, "no_rows", 0, "no data rows", fatal=True)
    if schema.task == "regression" and schema.columns.get(schema.target) == "categorical":
        return Problem(schema.target, "target_not_numeric", 1, f"target column {schema.target!r} is not numeric "
                       "(regression needs numbers; for labels set data.task: classification)", fatal=True)
    return None
