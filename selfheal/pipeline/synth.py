"""The embedded default data: California-housing-shaped rows, generated offline and deterministically.

Why synthetic: the pipeline must run with no network and no downloads, and dvc.lock pins the raw file's hash,
so the same params must always give the same bytes. The target is a non-linear function of income, location
(distance to the coastal metros: LA, SF Bay, San Diego), age and occupancy, so a boosted tree model clearly
beats a linear one - the way it does on the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from selfheal.core.atomic import atomic_write
from selfheal.core.config import DataParams, Params
from selfheal.core.errors import DataError

FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]
TARGET = "MedHouseVal"
COLUMNS = [*FEATURES, TARGET]
# Metro centres (lat, lon, share of rows, spread in degrees): LA basin, SF Bay, San Diego, Sacramento, the rest.
_CLUSTERS = [
    (34.05, -118.25, 0.42, 0.35),
    (37.75, -122.20, 0.24, 0.30),
    (32.80, -117.10, 0.08, 0.15),
    (38.55, -121.45, 0.08, 0.30),
    (37.00, -120.50, 0.18, 1.30),
]
_COAST = [(34.05, -118.25), (37.75, -122.20), (32.80, -117.10)]
_DRIFT_COLUMNS = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup"]
_PLACEHOLDERS = ("N/A", "?", "null", "-", "NA", "None")  # as people write them; all read back as missing


def _location(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    lat0, lon0, share, spread = (np.array(v) for v in zip(*_CLUSTERS, strict=False))
    pick = rng.choice(len(_CLUSTERS), size=rows, p=share / share.sum())
    lat = lat0[pick] + rng.normal(0, 1, rows) * spread[pick]
    lon = lon0[pick] + rng.normal(0, 1, rows) * spread[pick] * 1.2
    return np.clip(lat, 32.54, 41.95).round(2), np.clip(lon, -124.35, -114.31).round(2)


def make_housing(rows: int, seed: int) -> pd.DataFrame:
    """Clean rows with the real data's columns, ranges and rough marginals; MedHouseVal capped at 5.00001."""
    rng = np.random.default_rng(seed)
    lat, lon = _location(rng, rows)
    # distance (degrees) to the nearest coastal metro centre: the location premium decays with it
    dist = np.min([np.hypot(lat - a, (lon - b) * 0.8) for a, b in _COAST], axis=0)
    coastal = np.exp(-dist / 0.45)
    inc = np.exp(rng.normal(np.log(3.3), 0.45, rows) + 0.25 * coastal)
    inc = np.clip(inc, 0.4999, 15.0001).round(4)
    age = np.clip(np.abs(rng.normal(28 + 4 * coastal, 12.5, rows) - 1) + 1, 1, 52).round()
    rooms = 2.4 + 0.5 * inc - 0.012 * np.maximum(inc - 6, 0) ** 2 + rng.lognormal(-0.2, 0.5, rows)
    beds = 0.9 + 0.015 * rooms + rng.gamma(2.0, 0.03, rows) + (rng.random(rows) < 0.03) * rng.lognormal(-1.5, 1, rows)
    pop = np.clip(rng.lognormal(np.log(1170), 0.7, rows), 3, 35682).round()
    occup = np.clip(rng.lognormal(np.log(2.8), 0.22, rows) + 0.25 * (inc < 2), 0.7, None)

    value = (
        0.45
        + 1.55 * np.log1p(np.maximum(inc - 0.8, 0)) ** 1.6 / 2.2
        + 2.1 * coastal**1.5 * (0.6 + 0.4 * np.tanh(inc - 3))
        + 0.006 * age * coastal
        - 0.9 * np.clip(occup - 2.6, 0, 3) ** 0.7
        + 0.25 * np.sin(lat * 3.0) * (1 - coastal)
    )
    value = 0.2 + 1.15 * value * np.exp(rng.normal(0, 0.24, rows))
    value = np.maximum(value, rng.uniform(0.14999, 0.45, rows))  # no pile-up at the floor
    value = np.clip(value, 0.14999, 5.00001).round(5)
    return pd.DataFrame(
        {
            "MedInc": inc,
            "HouseAge": age,
            "AveRooms": rooms.round(6),
            "AveBedrms": beds.round(6),
            "Population": pop,
            "AveOccup": occup.round(6),
            "Latitude": lat,
            "Longitude": lon,
            TARGET: value,
        },
        columns=COLUMNS,
    ).astype("float64")


def make_current(rows: int, drift: float, seed: int) -> pd.DataFrame:
    """The production batch: the same generator with another seed, most features shifted by `drift` std."""
    df = make_housing(rows, seed + 1_000_003)
    if drift:
        for col in _DRIFT_COLUMNS:
            df[col] = (df[col] + drift * df[col].std()).round(6)
    return df


def inject_faults(
    df: pd.DataFrame,
    *,
    missing: float,
    outliers: float,
    duplicates: float,
    dtype_errors: float,
    seed: int,
    target: str = TARGET,
) -> pd.DataFrame:
    """A copy of `df` with the real world's faults in feature cells (never the target).

    Each share is of feature cells (rows for `duplicates`); the faulted cells are disjoint, so every fault
    is counted exactly once. Outliers land at Q3 + 10..50 IQR, far beyond any sane fence. Text values are
    padded numbers (" 3.2 ") or placeholders ("N/A", "?"); blanks are the `missing` fault. Duplicated rows
    are appended copies (faults included), then the rows are shuffled.
    """
    rng = np.random.default_rng(seed)
    features = [c for c in df.columns if c != target]
    out = df.reset_index(drop=True).copy()
    n_rows, n_feat = len(out), len(features)
    counts = [round(share * n_rows * n_feat) for share in (missing, outliers, dtype_errors)]
    if sum(counts) > n_rows * n_feat:
        raise ValueError("fault shares add up to more than all feature cells")
    cells = rng.choice(n_rows * n_feat, size=sum(counts), replace=False)
    miss, outl, text = np.split(cells, np.cumsum(counts)[:-1])
    for j, col in enumerate(features):
        values = out[col].to_numpy(dtype=object, copy=True)
        numeric = pd.to_numeric(out[col], errors="coerce")
        q1, q3 = numeric.quantile([0.25, 0.75])
        rows_o = outl[outl % n_feat == j] // n_feat
        values[rows_o] = (q3 + rng.uniform(10, 50, len(rows_o)) * max(q3 - q1, abs(q3) * 0.1, 1.0)).round(4)
        rows_t = text[text % n_feat == j] // n_feat
        for r in rows_t:
            if rng.random() < 0.5:
                values[r] = rng.choice(["{} ", " {}", " {} "]).format(values[r])
            else:
                values[r] = str(rng.choice(_PLACEHOLDERS))
        values[miss[miss % n_feat == j] // n_feat] = np.nan
        out[col] = pd.Series(values, dtype=object) if len(rows_t) else pd.to_numeric(pd.Series(values))
    n_dup = round(duplicates * n_rows)
    if n_dup:
        out = pd.concat([out, out.iloc[rng.choice(n_rows, size=n_dup, replace=False)]], ignore_index=True)
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def _write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, lineterminator="\n"))


def write_default_data(params: Params, force: bool = False, anywhere: bool = False) -> list[str]:
    """Write data.raw (faulted per params.synth) and data.current when absent (or `force`); say what happened.

    Same params -> same bytes, so the hash dvc.lock pins is stable across machines. Only at the embedded default
    paths (DataParams' defaults): a data.raw or data.current pointing elsewhere is the user's data, and a missing
    one is a typo or a forgotten copy - made up rows there would be trained on. Such a file is an error naming it
    and its params key, before anything is written; an existing one is never rewritten. `anywhere` lifts the
    rule for a scratch directory (the benchmarks).
    """
    s, d = params.synth, params.data
    jobs = {
        "raw": lambda: inject_faults(
            make_housing(s.rows, s.seed),
            missing=s.missing,
            outliers=s.outliers,
            duplicates=s.duplicates,
            dtype_errors=s.dtype_errors,
            seed=s.seed,
            target=TARGET,
        ),
        "current": lambda: make_current(s.current_rows, s.drift, s.seed),
    }
    paths = {key: Path(getattr(d, key)) for key in jobs}
    ours = {key: anywhere or str(path) == DataParams.model_fields[key].default for key, path in paths.items()}
    for key, path in paths.items():
        if not ours[key] and not path.exists():
            raise DataError(f"{path}: not found (params data.{key}); selfheal writes synthetic data only at the "
                            f"default {DataParams.model_fields[key].default} - fix the path or copy your file there")
    lines = []
    for key, build in jobs.items():
        path = paths[key]
        if path.exists() and not (force and ours[key]):
            lines.append(f"{path} present, kept" + ("" if ours[key] else f" (your data.{key}: never rewritten)"))
            continue
        df = build()
        _write_csv(path, df)
        lines.append(f"wrote {path} ({len(df):,} rows)")
    return lines
