"""Each data fix alone and all together, with exact counts in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selfheal.core.config import DataQualityParams
from selfheal.core.errors import DataError
from selfheal.pipeline.checks import infer_schema, read_csv_checked
from selfheal.pipeline.fixes import fix, summary_lines
from selfheal.pipeline.synth import FEATURES, inject_faults, make_housing

N = 400
DQ = DataQualityParams()
NO_CAP = DataQualityParams(cap_outliers=False)


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return make_housing(N, seed=11)


def run(tmp_path, df: pd.DataFrame, dq: DataQualityParams = DQ, target: str = "MedHouseVal", **schema_kw):
    """Through a real CSV file, as the stage sees it."""
    path = tmp_path / "raw.csv"
    df.to_csv(path, index=False)
    raw = read_csv_checked(path)
    return fix(raw, infer_schema(raw, target, **schema_kw), dq, source=str(path))


def test_clean_data_passes_unchanged(tmp_path, clean) -> None:
    out, report = run(tmp_path, clean, NO_CAP)
    pd.testing.assert_frame_equal(out, clean)
    assert report["valid_before"] and report["valid_after"] and report["rows_in"] == report["rows_out"] == N


def test_missing_numeric_filled_with_the_median_of_the_rest(tmp_path, clean) -> None:
    rows = [3, 50, 51, 120, 200, 333, 399]
    dirty = clean.copy()
    dirty.loc[rows, "MedInc"] = np.nan
    out, report = run(tmp_path, dirty, NO_CAP)
    col = report["columns"]["MedInc"]
    median = clean.MedInc.drop(rows).median()
    assert (col["missing"], col["missing_filled"], col["fill_value"]) == (7, 7, median)
    assert (out.loc[rows, "MedInc"] == median).all()
    pd.testing.assert_frame_equal(out.drop(rows), clean.drop(rows))
    assert not report["valid_before"] and report["valid_after"]
    assert f"Filled MedInc missing values with median: {round(median, 2):g} (7 values)" in summary_lines(report)


def test_numbers_written_as_text_are_converted_and_placeholders_become_missing(tmp_path, clean) -> None:
    dirty = clean.astype(object)
    dirty.loc[[1, 2, 3], "AveRooms"] = [f" {clean.AveRooms[1]} ", f"{clean.AveRooms[2]} ", f" {clean.AveRooms[3]}"]
    dirty.loc[[5, 6], "HouseAge"] = ["N/A", "?"]
    out, report = run(tmp_path, dirty, NO_CAP)
    rooms, age = report["columns"]["AveRooms"], report["columns"]["HouseAge"]
    assert (rooms["dtype_mismatches"], rooms["converted"], rooms["missing"]) == (3, 3, 0)
    assert (age["dtype_mismatches"], age["converted"], age["missing"], age["missing_filled"]) == (2, 0, 2, 2)
    assert out.AveRooms.tolist() == clean.AveRooms.tolist()
    assert out.dtypes.eq("float64").all()
    lines = summary_lines(report)
    assert "Converted 3 text values in AveRooms to numbers" in lines
    assert "Treated 2 non-numeric values in HouseAge as missing" in lines


def test_outliers_capped_at_the_iqr_fence(tmp_path, clean) -> None:
    dirty = clean.copy()
    dirty.loc[[10, 20, 30, 40, 50], "HouseAge"] = 5000.0
    out, report = run(tmp_path, dirty)
    age = report["columns"]["HouseAge"]
    q1, q3 = dirty.HouseAge.quantile([0.25, 0.75])
    assert age["outliers_capped"] == 5 and age["upper"] == pytest.approx(q3 + 3 * (q3 - q1))
    assert (out.loc[[10, 20, 30, 40, 50], "HouseAge"] == age["upper"]).all()
    assert out.HouseAge.drop([10, 20, 30, 40, 50]).equals(clean.HouseAge.drop([10, 20, 30, 40, 50]))
    assert "Capped 5 outliers in HouseAge" in summary_lines(report)


def test_the_target_is_never_capped_and_a_constant_column_never(tmp_path, clean) -> None:
    dirty = clean.assign(Flat=1.0)
    dirty.loc[0, "MedHouseVal"] = 500.0
    out, report = run(tmp_path, dirty)
    assert out.MedHouseVal[0] == 500.0 and "outliers_capped" not in report["columns"]["MedHouseVal"]
    assert "upper" not in report["columns"]["Flat"] and (out.Flat == 1.0).all()


def test_duplicates_dropped_even_when_only_the_text_differs(tmp_path, clean) -> None:
    dirty = pd.concat([clean, clean.iloc[[4, 8, 15]]], ignore_index=True).astype(object)
    dirty.loc[N, "MedInc"] = f" {clean.MedInc[4]} "  # same value, written as padded text
    out, report = run(tmp_path, dirty, NO_CAP)
    assert report["duplicates_removed"] == 3 and report["rows_out"] == N
    pd.testing.assert_frame_equal(out, clean)
    assert "Removed 3 duplicate rows" in summary_lines(report)


def test_rows_without_a_target_are_dropped_not_filled(tmp_path, clean) -> None:
    dirty = clean.astype(object)
    dirty.loc[[0, 1, 2], "MedHouseVal"] = [np.nan, "?", "N/A"]
    dirty.loc[3, "MedHouseVal"] = " 2.5 "
    out, report = run(tmp_path, dirty, NO_CAP)
    assert report["target_missing_dropped"] == 3 and len(out) == N - 3
    assert out.MedHouseVal[0] == 2.5 and out.MedHouseVal.notna().all()


def test_out_of_range_values_become_missing_then_filled(tmp_path, clean) -> None:
    dirty = clean.copy()
    dirty.loc[[7, 9], "HouseAge"] = [-4.0, 150.0]
    out, report = run(tmp_path, dirty, NO_CAP, ranges={"HouseAge": [0, 100]})
    age = report["columns"]["HouseAge"]
    assert (age["out_of_range"], age["missing_filled"]) == (2, 2)
    assert (out.loc[[7, 9], "HouseAge"] == clean.HouseAge.drop([7, 9]).median()).all()


def test_categorical_missing_filled_with_the_mode(tmp_path) -> None:
    df = pd.DataFrame({
        "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "ocean": ["NEAR BAY", "INLAND", "INLAND", None, "N/A", "?", "ISLAND", "INLAND"],
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    })
    out, report = run(tmp_path, df, target="price")
    ocean = report["columns"]["ocean"]
    assert ocean == {"kind": "categorical", "missing": 3, "missing_filled": 3, "fill_value": "INLAND"}
    assert out.ocean.tolist()[3:6] == ["INLAND"] * 3
    assert "Filled ocean missing values with mode: INLAND (3 values)" in summary_lines(report)


def test_classification_labels_are_kept_as_labels(tmp_path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=60), "z": rng.normal(size=60), "kind": ["a", "b", "c"] * 20,
                       "label": ["yes", "no"] * 30})
    df.loc[[0, 1], "x"] = np.nan
    df.loc[2, "label"] = None
    out, report = run(tmp_path, df, target="label", task="classification")
    assert report["columns"]["label"]["kind"] == "categorical" and report["target_missing_dropped"] == 1
    assert set(out.label) == {"yes", "no"} and out.x.notna().all() and report["valid_after"]


def test_all_faults_together_counted_exactly(tmp_path, clean) -> None:
    dirty = inject_faults(clean, missing=0.02, outliers=0.005, duplicates=0.03, dtype_errors=0.01, seed=5)
    out, report = run(tmp_path, dirty)
    cols = report["columns"]
    text = dirty[FEATURES].map(lambda v: isinstance(v, str))
    padded = dirty[FEATURES].map(lambda v: isinstance(v, str) and v.strip() != v)
    unique = dirty.drop_duplicates()[FEATURES]
    blanks_or_placeholders = unique.isna() | unique.map(lambda v: isinstance(v, str) and v.strip() == v)
    assert report["duplicates_removed"] == round(0.03 * N) and report["rows_out"] == N
    assert sum(cols[c]["dtype_mismatches"] for c in FEATURES) == text.sum().sum() >= round(0.01 * N * len(FEATURES))
    assert sum(cols[c]["converted"] for c in FEATURES) == padded.sum().sum()
    assert sum(cols[c]["missing_filled"] for c in FEATURES) == blanks_or_placeholders.sum().sum()
    assert sum(cols[c]["outliers_capped"] for c in FEATURES) >= round(0.005 * N * len(FEATURES))
    assert report["valid_after"] and not out.isna().any().any() and out.dtypes.eq("float64").all()


def test_auto_fix_disabled_changes_nothing_but_reports(tmp_path, clean) -> None:
    dirty = pd.concat([clean, clean.iloc[[1]]], ignore_index=True).astype(object)
    dirty.loc[0, "MedInc"] = np.nan
    dirty.loc[2, "AveRooms"] = " 5.5 "
    out, report = run(tmp_path, dirty, DataQualityParams(auto_fix_enabled=False))
    assert len(out) == N + 1 and out.MedInc.isna().sum() == 1 and np.isnan(out.AveRooms[2])
    assert report["duplicates_removed"] == 0 and not report["valid_after"]
    assert report["columns"]["AveRooms"]["converted"] == 0
    assert report["open_problems"] == ["MedInc: 1 missing value(s)", "AveRooms: 1 missing value(s)",
                                       "1 duplicate row(s)"]
    assert summary_lines(report)[-1].startswith("Data still invalid (MedInc: 1 missing value(s); ")


def test_each_fix_can_be_switched_off(tmp_path, clean) -> None:
    dirty = pd.concat([clean, clean.iloc[[1]]], ignore_index=True).astype(object)
    dirty.loc[0, "MedInc"] = np.nan
    dirty.loc[2, "AveRooms"] = " 5.5 "
    dirty.loc[3, "HouseAge"] = 9000.0
    off = DataQualityParams(fix_dtypes=False, fix_missing_values=False, cap_outliers=False, drop_duplicates=False)
    out, report = run(tmp_path, dirty, off)
    assert len(out) == N + 1 and out.MedInc.isna().sum() == 1 and out.HouseAge[3] == 9000.0
    assert np.isnan(out.AveRooms[2]) and report["columns"]["AveRooms"]["converted"] == 0
    assert not report["valid_after"]


def test_unfixable_data_names_the_source(tmp_path) -> None:
    df = pd.DataFrame({"x": ["", ""], "y": ["1", "2"]}, dtype="str")
    with pytest.raises(DataError, match=r"^raw\.csv: column 'x' is entirely empty$"):
        fix(df, infer_schema(df, "y"), DQ, source="raw.csv")
    with pytest.raises(DataError, match=r"^raw\.csv: target column 'price' not found"):
        fix(df, infer_schema(df, "price"), DQ, source="raw.csv")


def test_fixing_its_own_output_changes_nothing(tmp_path) -> None:
    """The second run used to cap more cells (the fences moved once gaps were filled)."""
    dirty = inject_faults(make_housing(2000, seed=5), missing=0.03, outliers=0.01, duplicates=0.01,
                          dtype_errors=0.01, seed=5)
    once, first = run(tmp_path, dirty)
    assert first["valid_after"] and sum(c.get("outliers_capped", 0) for c in first["columns"].values()) > 0
    twice, second = run(tmp_path, once)
    pd.testing.assert_frame_equal(twice, once)
    assert second["valid_before"] and second["problems_before"] == 0 and second["duplicates_removed"] == 0
    assert not any(c.get(k) for c in second["columns"].values() for k in ("outliers_capped", "missing_filled"))


def test_rows_made_identical_by_capping_are_dropped(tmp_path, clean) -> None:
    """Two rows that differ only in an outlier become one row once capped; the output stays valid."""
    dirty = clean.copy()
    dirty.loc[N] = dirty.loc[7]
    dirty.loc[7, "Population"], dirty.loc[N, "Population"] = 1e7, 2e7
    out, report = run(tmp_path, dirty)
    assert report["valid_after"] and report["duplicates_removed"] == 1 and len(out) == N
    assert report["columns"]["Population"]["outliers_capped"] >= 2
    assert not out.duplicated().any()


@pytest.mark.parametrize("cell", ["1e309", "-1e309", "inf", "-inf", "nan", "Infinity"])
def test_a_non_finite_target_drops_the_row(tmp_path, clean, cell: str) -> None:
    """1e309 used to pass as valid data and crash train."""
    dirty = clean.astype({"MedHouseVal": object})
    dirty.loc[[4, 9], "MedHouseVal"] = cell
    out, report = run(tmp_path, dirty)
    assert report["valid_after"] and report["target_missing_dropped"] == 2 and len(out) == N - 2
    assert np.isfinite(out["MedHouseVal"]).all()
    assert "Dropped 2 rows without a target value" in summary_lines(report)


def test_a_non_finite_feature_is_missing_then_filled(tmp_path, clean) -> None:
    dirty = clean.astype({"HouseAge": object})
    dirty.loc[3, "HouseAge"] = "1e309"
    out, report = run(tmp_path, dirty, NO_CAP)
    assert not report["valid_before"] and report["valid_after"] and report["columns"]["HouseAge"]["non_finite"] == 1
    assert out.loc[3, "HouseAge"] == report["columns"]["HouseAge"]["fill_value"]
    assert "Treated 1 non-finite values (inf, 1e309) in HouseAge as missing" in summary_lines(report)


@pytest.mark.parametrize("cell", ["nan", "inf", "-1e400", "0x10", "-0", "?", "N/A", "", " 3.2", "+5", "007", "2.5e1"])
def test_reading_numbers_first_gives_the_same_fix_as_reading_text(tmp_path, clean, cell: str) -> None:
    """read_csv_typed parses plain-number columns in the reader and leaves every other cell to the text repair:
    the fix and its report are exactly those of the all-text read, whatever odd cell one column holds."""
    from selfheal.pipeline.checks import read_csv_typed

    dirty = clean.astype(object)
    dirty.loc[[3, 9], "AveRooms"] = cell
    dirty["HouseAge"] = dirty["HouseAge"].round().astype(int)  # a column of integers
    dirty["ocean"] = np.where(np.arange(N) % 3, "INLAND", "NEAR_BAY")  # text, and numbers declared categorical
    path = tmp_path / "raw.csv"
    dirty.to_csv(path, index=False)
    texts, numbers = read_csv_checked(path), read_csv_typed(path, ("Population",))
    # the plain columns took the fast path, unless a space anywhere sends the whole file to the text reading
    assert numbers["MedInc"].dtype == ("str" if " " in cell else "float64")
    outs = [fix(raw, infer_schema(raw, "MedHouseVal", overrides={"Population": "categorical"}), DQ)
            for raw in (texts, numbers)]
    pd.testing.assert_frame_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1]
