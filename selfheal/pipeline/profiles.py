"""Mergeable data profiles: the statistics fix_data and monitor need, computed per partition and merged.

A profile of a typed partition (numeric columns as float64, categorical ones as str with missing as NA) holds,
per column, the row and missing counts, and
- numeric: count, mean and M2 (merged exactly with Chan's formula, for the reference std), a KLL quantile
  sketch (Apache DataSketches) of the present values, the exact values while the column has at most
  EXACT_VALUES of them, and exact value counts while it has at most LEVELS distinct values;
- categorical: exact value counts.
Quantiles (IQR fences, medians) are therefore EXACT (pandas' linear interpolation) for data up to EXACT_VALUES
rows whatever the partitioning, and within the sketch's rank error (~0.1% at K) above that. Merging is
associative, so a local loop over chunks and a dask tree reduction give the same profile.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from selfheal.pipeline import numfix

K = 2048  # KLL accuracy parameter: normalized rank error ~0.13% (single-sided), a few thousand items retained
EXACT_VALUES = 100_000  # keep the values themselves up to this many per column: exact quantiles and tests
LEVELS = 20  # value counts of a numeric column are kept while it has at most this many distinct values
CHUNK = 1 << 20  # values fed to a sketch at a time when they are generated (filled()): 8 MB, whatever the count


def _sketch() -> Any:
    import datasketches  # lazy: only the partitioned engine and profile drift need it

    return datasketches.kll_doubles_sketch(K)


@dataclass
class ColumnProfile:
    """One column's mergeable statistics (see the module docstring)."""

    kind: str  # numeric | categorical
    rows: int = 0
    missing: int = 0
    n: int = 0  # present values
    mean: float = 0.0
    m2: float = 0.0
    sketch: Any = None
    values: np.ndarray | None = field(default_factory=lambda: np.empty(0))
    counts: Counter | None = field(default_factory=Counter)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (dask ships profiles between processes): the sketch travels in its compact binary form."""
        state = dict(self.__dict__)
        if self.sketch is not None:
            state["sketch"] = self.sketch.serialize()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state["sketch"] is not None:
            import datasketches

            state["sketch"] = datasketches.kll_doubles_sketch.deserialize(state["sketch"])
        self.__dict__.update(state)

    @property
    def std(self) -> float:
        """Population std (numpy's default ddof=0, as Evidently norms the Wasserstein distance)."""
        return float(np.sqrt(self.m2 / self.n)) if self.n else float("nan")

    def quantile(self, q: float) -> float:
        """pandas' linear-interpolation quantile while exact, the sketch's estimate beyond."""
        if self.values is not None:
            return float(np.quantile(self.values, q)) if len(self.values) else float("nan")
        return float(self.sketch.get_quantile(q))

    def mode(self) -> Any:
        """The most frequent value; ties go to the smallest, as pandas' Series.mode().iloc[0]."""
        assert self.counts is not None
        top = max(self.counts.values())
        return min(v for v, c in self.counts.items() if c == top)


def column_profile(series: pd.Series, kind: str) -> ColumnProfile:
    """The profile of one typed column of one partition."""
    present = series.dropna()
    p = ColumnProfile(kind, rows=len(series), missing=len(series) - len(present), n=len(present))
    if kind == "categorical":
        p.counts = Counter(present.value_counts(sort=False).to_dict())
        p.values = None
        return p
    values = np.array(present.to_numpy(dtype="float64"), copy=True)  # the sketch takes a writeable array only
    if len(values):
        p.mean = float(values.mean())
        p.m2 = float(((values - p.mean) ** 2).sum())
    p.sketch = _sketch()
    p.sketch.update(values)
    p.values = values if len(values) <= EXACT_VALUES else None
    uniq, n = np.unique(values, return_counts=True)
    p.counts = Counter(dict(zip(uniq.tolist(), n.tolist(), strict=True))) if len(uniq) <= LEVELS else None
    return p


def merge_columns(a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    """a + b: counts add, moments merge (Chan et al.), sketches merge, exact values and levels while small."""
    out = ColumnProfile(a.kind, rows=a.rows + b.rows, missing=a.missing + b.missing, n=a.n + b.n)
    if a.counts is not None and b.counts is not None:
        out.counts = a.counts + b.counts
        if a.kind == "numeric" and len(out.counts) > LEVELS:
            out.counts = None
    else:
        out.counts = None
    if a.kind == "categorical":
        out.values = None
        return out
    if out.n:
        delta = b.mean - a.mean
        out.mean = a.mean + delta * b.n / out.n
        out.m2 = a.m2 + b.m2 + delta**2 * a.n * b.n / out.n
    out.sketch = _sketch()
    for s in (a.sketch, b.sketch):
        if s is not None and not s.is_empty():
            out.sketch.merge(s)
    exact = a.values is not None and b.values is not None and out.n <= EXACT_VALUES
    out.values = np.concatenate([a.values, b.values]) if exact else None
    return out


def filled(col: ColumnProfile, value: float) -> ColumnProfile:
    """A numeric column's profile once its missing values are filled with `value` (fix_data's fences are measured
    on the filled data): the value is added `missing` times, to the sketch in chunks, so memory stays flat."""
    n = col.missing
    add = ColumnProfile("numeric", rows=0, missing=-n, n=n, mean=value, sketch=_sketch())  # rows: the same rows
    for start in range(0, n, CHUNK):
        add.sketch.update(np.full(min(CHUNK, n - start), value, dtype="float64"))
    add.values = np.full(n, value, dtype="float64") if n <= EXACT_VALUES else None
    add.counts = Counter({value: n})
    return merge_columns(col, add)


@dataclass
class Profile:
    """A frame's profile: row count and one ColumnProfile per column (file order)."""

    rows: int
    columns: dict[str, ColumnProfile]


def profile_frame(frame: pd.DataFrame, kinds: dict[str, str]) -> Profile:
    """Profile the typed columns `kinds` ({name: numeric|categorical}) of one partition."""
    return Profile(len(frame), {c: column_profile(frame[c], k) for c, k in kinds.items()})


def merge(profiles: list[Profile]) -> Profile:
    """Merge the profiles of partitions (any order gives the same counts; sketches agree within their error)."""
    out = profiles[0]
    for p in profiles[1:]:
        out = Profile(out.rows + p.rows, {c: merge_columns(out.columns[c], p.columns[c]) for c in out.columns})
    return out


def iqr_fences(col: ColumnProfile, k: float) -> tuple[float, float] | None:
    """Q1 - k*IQR, Q3 + k*IQR from the profile's quartiles (numfix.fences, as the in-memory fix); None when IQR
    is 0."""
    if not col.n:
        return None
    return numfix.fences(float(col.quantile(0.25)), float(col.quantile(0.75)), k)
