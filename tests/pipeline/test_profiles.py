"""Mergeable profiles: drift verdicts equal Evidently's on the same frames, IQR fences from sketches are within 1%
of pandas' exact ones, and the partitioned fix (local and on a real 2-worker dask LocalCluster) gives the same
data and report as the in-memory fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal.core.config import DataQualityParams
from selfheal.pipeline import engine, partitioned, profile_drift, profiles
from selfheal.pipeline.checks import infer_schema, read_csv_checked
from selfheal.pipeline.drift_report import evidently_drift
from selfheal.pipeline.fixes import fix
from selfheal.pipeline.partitioned import fix_partitioned, profile_source
from selfheal.pipeline.synth import FEATURES, inject_faults, make_current, make_housing

EVIDENTLY_NAMES = {"ks": "K-S", "chisquare": "chi-square", "z": "Z-test", "wasserstein": "Wasserstein",
                   "jensenshannon": "Jensen-Shannon"}
KINDS = {**{c: "numeric" for c in FEATURES}, "ocean": "categorical", "coastal": "categorical"}


def _frame(df: pd.DataFrame, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Housing features plus a 4-level and a 2-level categorical column (shifted with the numbers)."""
    rng = np.random.default_rng(seed)
    p = np.array([0.4, 0.3, 0.2, 0.1]) + np.array([-1, 0, 0, 1]) * min(shift, 0.3) / 2
    return df[FEATURES].assign(
        ocean=pd.Series(rng.choice(["INLAND", "NEAR BAY", "<1H OCEAN", "ISLAND"], len(df), p=p), dtype="str"),
        coastal=pd.Series(np.where(rng.random(len(df)) < 0.5 + min(shift, 0.3) / 3, "yes", "no"), dtype="str"),
    )


def _datasets(ref_rows: int) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    reference = _frame(make_housing(ref_rows, seed=1), seed=1)
    one = make_current(2000, 0.0, seed=5)
    one["MedInc"] = one["MedInc"] + 0.8 * one["MedInc"].std()
    return {
        "no drift": (reference, _frame(make_current(2000, 0.0, seed=5), seed=2)),
        "one column": (reference, _frame(one, seed=2)),
        "most columns": (reference, _frame(make_current(2000, 0.8, seed=5), seed=3, shift=0.8)),
    }


def _profile(frame: pd.DataFrame, parts: int = 4) -> profiles.Profile:
    return profiles.merge([profiles.profile_frame(frame.iloc[i::parts], KINDS) for i in range(parts)])


@pytest.mark.parametrize("ref_rows", [3000, 800], ids=["distance tests", "p-value tests"])
@pytest.mark.parametrize("exact", [True, False], ids=["exact values", "sketches only"])
def test_profile_verdicts_equal_evidentlys(ref_rows: int, exact: bool, monkeypatch) -> None:
    if not exact:  # every numeric test from the KLL sketches, as on data above EXACT_VALUES rows
        monkeypatch.setattr(profiles, "EXACT_VALUES", 0)
    seen = {}
    for name, (ref, cur) in _datasets(ref_rows).items():
        theirs, _ = evidently_drift(ref, cur, KINDS)
        ours = profile_drift.drift(_profile(ref), _profile(cur), list(KINDS))
        assert {c: v["drifted"] for c, v in ours.items()} == {c: v["drifted"] for c, v in theirs.items()}, name
        for col, v in ours.items():  # the same test, and (exactly, or within the sketch's error) the same score
            assert theirs[col]["stattest"].startswith(EVIDENTLY_NAMES[v["stattest"]]), (name, col)
            if exact or v["stattest"] in ("chisquare", "z", "jensenshannon"):
                assert v["drift_score"] == pytest.approx(theirs[col]["drift_score"], rel=1e-6, abs=1e-12)
        seen[name] = sum(v["drifted"] for v in ours.values())
    # p-value tests flag ~5% of undrifted columns (Evidently and the profiles alike); distances flag none
    assert seen["no drift"] <= (1 if ref_rows <= 1000 else 0)
    assert seen["one column"] >= 1 and seen["most columns"] >= 6


def test_iqr_fences_from_sketches_are_within_one_percent_of_exact(monkeypatch) -> None:
    monkeypatch.setattr(profiles, "EXACT_VALUES", 0)
    data = make_housing(200_000, seed=7)
    for col in ("MedInc", "AveRooms", "Population", "HouseAge"):
        merged = profiles.merge(
            [profiles.profile_frame(data.iloc[i::4], {col: "numeric"}) for i in range(4)]
        ).columns[col]
        assert merged.values is None and merged.sketch.is_estimation_mode()  # really from the sketch
        q1, q3 = data[col].quantile([0.25, 0.75])
        exact = (q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1))
        ours = profiles.iqr_fences(merged, 3.0)
        assert ours is not None
        for a, b in zip(ours, exact, strict=True):  # 1% of the fence, or of the IQR for a fence near zero
            assert abs(a - b) <= 0.01 * max(abs(b), q3 - q1), (col, ours, exact)


def _dirty_csv(path: Path, rows: int = 4000) -> Path:
    df = inject_faults(make_housing(rows, seed=11), missing=0.01, outliers=0.002, duplicates=0.01,
                       dtype_errors=0.002, seed=12)
    df.to_csv(path, index=False)
    return path


def _in_memory(path: Path) -> tuple[pd.DataFrame, dict]:
    raw = read_csv_checked(path)
    return fix(raw, infer_schema(raw, "MedHouseVal"), DataQualityParams(), source=str(path))


def test_partitioned_local_fix_equals_the_in_memory_fix(tmp_path: Path) -> None:
    raw = _dirty_csv(tmp_path / "raw.csv")
    expected, report = _in_memory(raw)
    assert report["duplicates_removed"] and report["columns"]["MedInc"].get("outliers_capped")
    ours = fix_partitioned(str(raw), tmp_path / "clean.parquet", "MedHouseVal", "regression", {}, {},
                           DataQualityParams(), "local", partition_mb=0.05)
    assert ours.pop("partitions") >= 4 and ours.pop("engine") == "local"
    assert (tmp_path / "clean.parquet").is_dir()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "clean.parquet"), expected, check_dtype=False)
    assert ours == report


def test_duplicates_found_bucket_by_bucket_equal_the_in_memory_fix(tmp_path: Path, monkeypatch) -> None:
    """Flat memory: the driver deduplicates the spilled row hashes one hash bucket at a time; with
    buckets of 500 rows (4,000 rows: 8 buckets) the first copies kept and the report are the in-memory fix's."""
    monkeypatch.setattr(partitioned, "BUCKET_ROWS", 500)
    raw = _dirty_csv(tmp_path / "raw.csv")
    expected, report = _in_memory(raw)
    ours = fix_partitioned(str(raw), tmp_path / "clean.parquet", "MedHouseVal", "regression", {}, {},
                           DataQualityParams(), "local", partition_mb=0.05)
    ours.pop("partitions"), ours.pop("engine")
    assert report["duplicates_removed"] > 30
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "clean.parquet"), expected, check_dtype=False)
    assert ours == report


def test_four_partitions_on_a_two_worker_dask_cluster_match_the_single_file_local_engine(tmp_path: Path) -> None:
    raw = _dirty_csv(tmp_path / "raw.csv")
    parts = tmp_path / "parts"
    parts.mkdir()
    text = raw.read_text().splitlines(keepends=True)
    body = text[1:]
    for i in range(4):  # the same rows, in order, as 4 CSV files
        (parts / f"part-{i}.csv").write_text(text[0] + "".join(body[i * len(body) // 4 : (i + 1) * len(body) // 4]))
    kwargs = dict(target="MedHouseVal", task="regression", overrides={}, ranges={}, dq=DataQualityParams())
    local = fix_partitioned(str(raw), tmp_path / "local.parquet", engine_name="local", **kwargs)
    dask = fix_partitioned(str(parts), tmp_path / "dask.parquet", engine_name="dask", **kwargs)
    assert (local.pop("engine"), local.pop("partitions"), dask.pop("engine"), dask.pop("partitions")) == (
        "local", 1, "dask", 4)
    assert dask == local
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask.parquet"), pd.read_parquet(tmp_path / "local.parquet"))

    current = tmp_path / "current.csv"
    make_current(3000, 0.8, seed=3).to_csv(current, index=False)
    kinds = {c: "numeric" for c in FEATURES}
    cur = profile_source(str(current), kinds)
    verdicts = {  # the reference profiled from the single file locally, and from the 4 parts on the cluster
        name: profile_drift.drift(profile_source(source, kinds, name), cur, FEATURES)
        for name, source in (("local", str(raw)), ("dask", str(parts)))
    }
    for col, v in verdicts["local"].items():  # the same up to the order of floating-point sums
        assert verdicts["dask"][col] == {**v, "drift_score": pytest.approx(v["drift_score"], rel=1e-9)}
    assert sum(v["drifted"] for v in verdicts["local"].values()) >= 6


def test_local_cluster_workers_are_never_forks_of_this_threaded_process(monkeypatch) -> None:
    """This process runs threads (the cluster's event loop, pytest's), and a fork copies any lock one of them
    holds at that moment into a worker that then waits on it for ever (seen: a LocalCluster that never came up).
    The workers come from a fork server instead: not children of this process, without its module state."""
    monkeypatch.setattr(engine, "_set_in_the_parent", "yes", raising=False)
    with engine.mapper("dask", 2) as run:
        assert run(lambda _: os.getppid() != os.getpid(), [0, 1]) == [True, True]
        assert os.getpid() not in run(lambda _: os.getppid(), [0, 1])
        assert run(lambda _: getattr(engine, "_set_in_the_parent", None), [0, 1]) == [None, None]


def _both(tmp_path: Path, df: pd.DataFrame, target: str, dq: DataQualityParams, partition_mb: float
          ) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """fix and fix_partitioned (into clean.parquet) on the CSV of `df`: (in-memory frame, report, ours, report)."""
    raw = tmp_path / "raw.csv"
    df.to_csv(raw, index=False)
    text = read_csv_checked(raw)
    expected, report = fix(text, infer_schema(text, target), dq, source=str(raw))
    out = tmp_path / "clean.parquet"
    ours = fix_partitioned(str(raw), out, target, "regression", {}, {}, dq, "local", partition_mb)
    assert ours.pop("engine") == "local" and ours.pop("partitions") >= 3
    return expected, report, pd.read_parquet(out), ours


@pytest.mark.parametrize("seed", [6, 2188, 4], ids=["3 passes", "4 passes", "bound of 10 passes"])
def test_partitioned_fix_follows_fix_through_every_cap_pass(tmp_path: Path, seed: int) -> None:
    """Sparse data and tight fences: dropping the rows capping made identical moves the quartiles, so `fix` caps
    again (3, 4 and MAX_CAP_PASSES passes for these seeds); the partitioned fix takes the same passes."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.choice([0, 1, 2, 3, 20, 50], 14).astype(float),
                       "b": rng.choice([0, 1, 2, 30], 14).astype(float), "y": rng.choice([1, 2], 14).astype(float)})
    dq = DataQualityParams(outlier_threshold_iqr=0.5)
    expected, report, ours, ours_report = _both(tmp_path, df, "y", dq, partition_mb=0.00005)  # ~4 rows a part
    assert report["duplicates_removed"] and sum(c.get("outliers_capped", 0) for c in report["columns"].values())
    pd.testing.assert_frame_equal(ours, expected, check_dtype=False)
    assert ours_report == report


def test_partitioned_fix_drops_rows_capping_made_identical_across_partitions(tmp_path: Path) -> None:
    """Two rows that differ only in an outlier, in the first and the last partition, become one row once capped;
    the output is a fixed point: fixing it again (as parquet parts) changes nothing."""
    df = make_housing(400, seed=11)
    df.loc[400] = df.loc[7]
    df.loc[7, "Population"], df.loc[400, "Population"] = 1e7, 2e7
    df["HouseAge"] = df["HouseAge"].astype(object)
    df.loc[[3, 200], "HouseAge"] = ["1e309", ""]  # a non-finite and a missing value: filled before the fences
    expected, report, ours, ours_report = _both(tmp_path, df, "MedHouseVal", DataQualityParams(), 0.005)
    assert report["duplicates_removed"] == 1 and len(expected) == 400 and report["valid_after"]
    assert report["columns"]["HouseAge"]["non_finite"] == 1 and report["columns"]["HouseAge"]["missing_filled"] == 2
    pd.testing.assert_frame_equal(ours, expected, check_dtype=False)
    assert ours_report == report

    again = fix_partitioned(str(tmp_path / "clean.parquet"), tmp_path / "again.parquet", "MedHouseVal",
                            "regression", {}, {}, DataQualityParams(), "local", 64)
    assert again["duplicates_removed"] == 0 and again["rows_out"] == 400 and again["problems_before"] == 0
    assert not any(c.get("outliers_capped") or c.get("missing_filled") for c in again["columns"].values())
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again.parquet"), ours)


def test_partitioned_fix_from_sketches_is_within_their_error_in_one_pass(tmp_path: Path, monkeypatch) -> None:
    """Above EXACT_VALUES the fences come from KLL sketches: within 1% of the fence span of `fix`'s, the same rows
    and (almost) the same capped cells, and one fill-and-cap pass: a re-sketched estimate of the capped data
    differs from the last one within the sketch's error, which must not start another pass."""
    monkeypatch.setattr(profiles, "EXACT_VALUES", 0)
    maps = []
    real = partitioned._fix_part
    monkeypatch.setattr(partitioned, "_fix_part", lambda *a, **kw: maps.append(1) or real(*a, **kw))
    df = inject_faults(make_housing(40_000, seed=11), missing=0.01, outliers=0.002, duplicates=0.01,
                       dtype_errors=0.002, seed=12)
    expected, report, ours, ours_report = _both(tmp_path, df, "MedHouseVal", DataQualityParams(), 0.5)
    parts = len(list((tmp_path / "clean.parquet").glob("part-*.parquet")))
    assert len(maps) == parts
    assert len(ours) == len(expected) and ours_report["duplicates_removed"] == report["duplicates_removed"]
    for col in FEATURES:
        a, b = ours_report["columns"][col], report["columns"][col]
        span = b["upper"] - b["lower"]
        assert abs(a["lower"] - b["lower"]) <= 0.01 * span and abs(a["upper"] - b["upper"]) <= 0.01 * span, col
        assert abs(a["outliers_capped"] - b["outliers_capped"]) <= 0.01 * b["outliers_capped"] + 2, col
