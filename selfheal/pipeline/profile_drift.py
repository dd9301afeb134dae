"""Per-column drift from two merged profiles, with the test and threshold Evidently 0.7 picks for that column.

Evidently's default (evidently/legacy/calculations/stattests/registry.py `_get_default_stattest`, on the columns
with missing values dropped), reproduced here:

| reference rows | column | distinct values (both sides) | test | drifted when |
| --- | --- | --- | --- | --- |
| <= 1000 | numeric | > 5 | K-S p-value | p <= 0.05 |
| <= 1000 | numeric or categorical | 3-5 (numeric), > 2 (categorical) | chi-square p-value | p < 0.05 |
| <= 1000 | numeric or categorical | <= 2 | Z-test p-value | p < 0.05 |
| > 1000 | numeric | > 5 | Wasserstein distance / reference std | >= 0.1 |
| > 1000 | numeric <= 5 values, or categorical | | Jensen-Shannon distance | >= 0.1 |

How each is computed from the profiles:
- chi-square, Z-test and Jensen-Shannon need value counts only: the profiles hold them exactly, so these are
  Evidently's numbers to the last digit.
- K-S and Wasserstein use the values themselves while both profiles still hold them (up to
  profiles.EXACT_VALUES per column): the same scipy calls as Evidently. Beyond that, they are computed from the
  KLL sketches, whose retained items with their weights are a weighted summary of the column: Wasserstein as
  scipy's weighted distance of the two summaries, normed by the exact reference std (merged moments); K-S as the
  largest gap between the two sketch CDFs with scipy's asymptotic p-value (what ks_2samp uses for large samples).
  Both are then within the sketches' rank error (~0.1%) of the exact figures: a verdict can differ from
  Evidently's only when the score sits within that error of its threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from selfheal.pipeline.profiles import ColumnProfile, Profile

SMALL_REFERENCE = 1000
THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.1}
# the names Evidently's reports give these tests (drift.json carries them)
EVIDENTLY_NAMES = {"ks": "K-S p_value", "chisquare": "chi-square p_value", "z": "Z-test p_value",
                   "wasserstein": "Wasserstein distance (normed)", "jensenshannon": "Jensen-Shannon distance"}


def dataset_drift(share: float, threshold: float) -> bool:
    """The one drift rule: some feature column drifted and their share reached the threshold (Evidently's ">=")."""
    return share > 0 and share >= threshold


def _levels(ref: ColumnProfile, cur: ColumnProfile) -> int | None:
    """Distinct present values over both sides, or None when a side has too many to count (numeric only)."""
    if ref.counts is None or cur.counts is None:
        return None
    return len(set(ref.counts) | set(cur.counts))


def choose_test(ref: ColumnProfile, cur: ColumnProfile) -> str:
    """Evidently's default test for this column (see the table in the module docstring)."""
    levels = _levels(ref, cur)
    many = levels is None or levels > 5
    if ref.n <= SMALL_REFERENCE:
        if ref.kind == "numeric" and many:
            return "ks"
        return "chisquare" if levels is None or levels > 2 else "z"
    return "wasserstein" if ref.kind == "numeric" and many else "jensenshannon"


def _shares(ref: ColumnProfile, cur: ColumnProfile) -> tuple[list[Any], np.ndarray, np.ndarray]:
    assert ref.counts is not None and cur.counts is not None
    keys = list(set(ref.counts) | set(cur.counts))
    return (
        keys,
        np.array([ref.counts.get(k, 0) for k in keys], dtype=float),
        np.array([cur.counts.get(k, 0) for k in keys], dtype=float),
    )


def _weighted(col: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    items = list(col.sketch)
    return np.array([v for v, _ in items]), np.array([w for _, w in items], dtype=float)


def _ks(ref: ColumnProfile, cur: ColumnProfile) -> float:
    from scipy import stats

    if ref.values is not None and cur.values is not None:
        return float(stats.ks_2samp(ref.values, cur.values)[1])
    grid = np.unique(np.concatenate([_weighted(ref)[0], _weighted(cur)[0]]))
    gap = float(np.max(np.abs(np.array(ref.sketch.get_cdf(grid))[:-1] - np.array(cur.sketch.get_cdf(grid))[:-1])))
    n = round(ref.n * cur.n / (ref.n + cur.n))
    return float(stats.kstwo.sf(gap, n)) if n else 1.0


def _z(ref: ColumnProfile, cur: ColumnProfile) -> float:
    from scipy.stats import norm

    keys, r, c = _shares(ref, cur)
    if len(keys) == 1:
        return 1.0
    first = keys.index(sorted(keys)[0])  # Evidently: the share of values other than the smallest key
    p1, p2 = 1 - r[first] / ref.n, 1 - c[first] / cur.n
    pooled = (p1 * ref.n + p2 * cur.n) / (ref.n + cur.n)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / ref.n + 1 / cur.n))
    return float(2 * (1 - norm.cdf(np.abs(z))))


def _score(test: str, ref: ColumnProfile, cur: ColumnProfile) -> float:
    from scipy import stats
    from scipy.spatial import distance

    if test == "ks":
        return _ks(ref, cur)
    if test == "z":
        return _z(ref, cur)
    if test == "chisquare":
        _, r, c = _shares(ref, cur)
        return float(stats.chisquare(c, r * (cur.n / ref.n))[1])
    if test == "jensenshannon":
        _, r, c = _shares(ref, cur)
        return float(distance.jensenshannon(r / ref.n, c / cur.n))
    norm = max(ref.std, 0.001)
    if ref.values is not None and cur.values is not None:
        return float(stats.wasserstein_distance(ref.values, cur.values)) / norm
    (rv, rw), (cv, cw) = _weighted(ref), _weighted(cur)
    return float(stats.wasserstein_distance(rv, cv, rw, cw)) / norm


def column_drift(ref: ColumnProfile, cur: ColumnProfile) -> dict[str, Any]:
    """{drift_score, drifted, stattest, stattest_threshold} as drift.json reports a column."""
    import warnings

    test = choose_test(ref, cur)
    with warnings.catch_warnings():  # a category absent on one side makes scipy warn; the score is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        score = _score(test, ref, cur)
    threshold = THRESHOLDS[test]
    if test in ("wasserstein", "jensenshannon"):
        drifted = score >= threshold
    else:
        drifted = score <= threshold if test == "ks" else score < threshold
    return {"drift_score": score, "drifted": bool(drifted), "stattest": test, "stattest_threshold": threshold}


def drift(reference: Profile, current: Profile, columns: list[str]) -> dict[str, dict[str, Any]]:
    """Per-column drift of `columns` between two merged profiles."""
    return {c: column_drift(reference.columns[c], current.columns[c]) for c in columns}
