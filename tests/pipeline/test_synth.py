"""The embedded default data: shape, realism, faults counted exactly, same bytes every time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selfheal.core.atomic import md5_file
from selfheal.core.config import parse_params
from selfheal.pipeline.checks import PLACEHOLDERS, parse_numbers
from selfheal.pipeline.synth import COLUMNS, FEATURES, inject_faults, make_current, make_housing, write_default_data

ROOT = Path(__file__).resolve().parents[2]


def test_housing_has_the_real_columns_and_ranges() -> None:
    df = make_housing(3000, seed=1)
    assert list(df.columns) == COLUMNS
    assert (df.dtypes == "float64").all() and not df.isna().any().any()
    assert df.MedInc.between(0.4999, 15.0001).all() and 2.5 < df.MedInc.median() < 4.5
    assert df.HouseAge.between(1, 52).all() and (df.HouseAge == df.HouseAge.round()).all()
    assert df.Latitude.between(32.5, 42).all() and df.Longitude.between(-124.4, -114.3).all()
    assert df.MedHouseVal.between(0.14999, 5.00001).all() and df.MedHouseVal.max() == 5.00001


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    pd.testing.assert_frame_equal(make_housing(500, 7), make_housing(500, 7))
    assert not make_housing(500, 7).equals(make_housing(500, 8))


def test_target_is_learnable_and_non_linear() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from threadpoolctl import threadpool_limits

    df = make_housing(3000, seed=3)
    train, test = df.iloc[:2400], df.iloc[2400:]
    X, y = train[FEATURES], train.MedHouseVal
    with threadpool_limits(1):  # OpenMP threads spinning against the other pytest worker cost 15x here
        boosted = HistGradientBoostingRegressor(random_state=0).fit(X, y).score(test[FEATURES], test.MedHouseVal)
    linear = Ridge().fit(X, y).score(test[FEATURES], test.MedHouseVal)
    assert boosted > 0.7 and boosted - linear > 0.08


def test_current_batch_drifts_by_the_requested_shift() -> None:
    same, shifted = make_current(4000, 0.0, seed=5), make_current(4000, 1.0, seed=5)
    ref = make_housing(4000, seed=5)
    assert abs(same.MedInc.mean() - ref.MedInc.mean()) < 0.1 * ref.MedInc.std()
    assert shifted.MedInc.mean() - same.MedInc.mean() == pytest.approx(same.MedInc.std(), rel=0.01)
    assert (shifted.Latitude == same.Latitude).all()


def test_faults_are_injected_in_exact_numbers_and_never_in_the_target() -> None:
    clean = make_housing(1000, seed=2)
    cells = 1000 * len(FEATURES)
    dirty = inject_faults(clean, missing=0.01, outliers=0.005, duplicates=0.02, dtype_errors=0.004, seed=2)
    assert len(dirty) == 1020
    assert dirty.MedHouseVal.notna().all() and dirty.MedHouseVal.dtype == "float64"
    deduped = dirty.drop_duplicates()
    assert len(deduped) == 1000
    text = sum(parse_numbers(deduped[c]).text for c in FEATURES)
    assert text == round(0.004 * cells)
    blanks = sum(deduped[c].isna().sum() for c in FEATURES)
    assert blanks == round(0.01 * cells)
    texts = [v for c in FEATURES for v in deduped[c] if isinstance(v, str)]
    assert all(v.strip().lower() in PLACEHOLDERS or v != v.strip() for v in texts)


def test_outliers_are_far_beyond_the_iqr_fences() -> None:
    clean = make_housing(2000, seed=4).assign(MedHouseVal=np.arange(2000.0))  # the target is a row id here
    dirty = inject_faults(clean, missing=0, outliers=0.01, duplicates=0, dtype_errors=0, seed=4)
    dirty = dirty.sort_values("MedHouseVal", ignore_index=True)
    q1, q3 = clean[FEATURES].quantile(0.25), clean[FEATURES].quantile(0.75)
    changed = dirty[FEATURES] != clean[FEATURES]
    assert changed.sum().sum() == round(0.01 * 2000 * len(FEATURES))
    assert (dirty[FEATURES][changed] > q3 + 8 * (q3 - q1)).sum().sum() == changed.sum().sum()


def test_write_default_data_is_deterministic_and_keeps_existing_files(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = parse_params({"synth": {"rows": 800, "current_rows": 200}})
    lines = write_default_data(params)
    assert lines == ["wrote data/raw/housing.csv (804 rows)", "wrote data/current/housing.csv (200 rows)"]
    first = md5_file("data/raw/housing.csv"), md5_file("data/current/housing.csv")
    assert write_default_data(params) == [
        "data/raw/housing.csv present, kept",
        "data/current/housing.csv present, kept",
    ]
    write_default_data(params, force=True)
    assert (md5_file("data/raw/housing.csv"), md5_file("data/current/housing.csv")) == first
    raw = pd.read_csv("data/raw/housing.csv", dtype=str, keep_default_na=False)
    assert list(raw.columns) == COLUMNS
    assert np.isin(raw.MedInc.str.strip().str.lower(), PLACEHOLDERS).sum() > 0


def _synth(cwd: Path, *args: str, **data: str) -> subprocess.CompletedProcess:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    params["synth"].update(rows=300, current_rows=50)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([str(Path(sys.executable).parent / "selfheal"), "synth", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_synth_never_invents_data_at_a_users_path(tmp_path: Path) -> None:
    """`make run` with a typo in data.raw: a one-line error naming the file and the key, nothing written."""
    proc = _synth(tmp_path, **{"raw": "data/raw/housng.csv"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data/raw/housng.csv: not found (params data.raw); selfheal writes synthetic data only at the "
        "default data/raw/housing.csv - fix the path or copy your file there"]
    assert not (tmp_path / "data").exists()  # neither the typo path nor data.current was written
    proc = _synth(tmp_path, **{"current": "batches/today.csv"})
    assert proc.returncode == 2 and "(params data.current)" in proc.stderr and not (tmp_path / "data").exists()


def test_synth_force_rewrites_only_the_default_files(tmp_path: Path) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_text("a,b\n1,2\n")
    proc = _synth(tmp_path, "--force", raw="mine.csv")
    assert proc.returncode == 0, proc.stderr
    assert mine.read_text() == "a,b\n1,2\n"
    assert "mine.csv present, kept (your data.raw: never rewritten)" in proc.stdout
    assert (tmp_path / "data/current/housing.csv").exists()
