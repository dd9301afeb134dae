"""The partitioned engine reads its input from S3 (s3fs; endpoint and credentials from the standard AWS
environment) and gets what it gets from the same files on disk. On a real moto server; marked `remote`: run by
`make test-remote`, not by `make test`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from selfheal.core.config import DataQualityParams, ScaleParams
from selfheal.core.errors import DataError
from selfheal.pipeline import partitioned
from selfheal.pipeline.partitioned import fix_partitioned, profile_source
from selfheal.pipeline.synth import FEATURES, inject_faults, make_housing
from tests.moto_support import CREDENTIALS, moto_server, s3_client

pytestmark = pytest.mark.remote

BUCKET = "selfheal-data"
KINDS = dict.fromkeys(FEATURES, "numeric")


@pytest.fixture()
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Dirty housing rows as 3 CSV files and 1 parquet file on disk, the same files under s3://BUCKET/raw/ on a
    moto server, and the environment a user would export (AWS_ENDPOINT_URL names the S3-compatible store)."""
    frame = inject_faults(make_housing(4000, seed=11), missing=0.01, outliers=0.002, duplicates=0.01,
                          dtype_errors=0.002, seed=12)
    local = tmp_path / "raw"
    local.mkdir()
    chunks = [frame.iloc[i * 1000:(i + 1) * 1000] for i in range(4)]
    for i, chunk in enumerate(chunks[:3]):
        chunk.to_csv(local / f"part-{i}.csv", index=False)
    chunks[3].apply(pd.to_numeric, errors="coerce").to_parquet(local / "part-3.parquet", index=False)
    with moto_server(tmp_path) as endpoint:
        for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(key, value)
        client = s3_client(endpoint)
        client.create_bucket(Bucket=BUCKET)
        for path in local.iterdir():
            client.upload_file(str(path), BUCKET, f"raw/{path.name}")
        yield local


def _fix(source: str, out: Path, engine: str = "local") -> tuple[dict, pd.DataFrame]:
    report = fix_partitioned(source, out, "MedHouseVal", "regression", {}, {}, DataQualityParams(), engine,
                             partition_mb=0.03)
    return report, pd.read_parquet(out)


def test_s3_directory_is_fixed_like_the_same_files_on_disk(parts: Path, tmp_path: Path) -> None:
    assert partitioned.wanted(f"s3://{BUCKET}/raw", ScaleParams())  # s3 always takes the partitioned path
    local_report, local_rows = _fix(str(parts), tmp_path / "local.parquet")
    s3_report, s3_rows = _fix(f"s3://{BUCKET}/raw", tmp_path / "s3.parquet")
    assert s3_report["partitions"] == local_report["partitions"] > 4  # the CSVs were read in byte ranges
    assert s3_report == local_report and local_report["duplicates_removed"] > 0
    pd.testing.assert_frame_equal(s3_rows, local_rows)


def test_s3_glob_is_profiled_like_the_same_files_on_disk_also_on_dask(parts: Path) -> None:
    expected = profile_source(str(parts / "part-*.csv"), KINDS, partition_mb=0.03)
    for engine in ("local", "dask"):
        ours = profile_source(f"s3://{BUCKET}/raw/part-*.csv", KINDS, engine, partition_mb=0.03)
        assert ours.rows == expected.rows == 3000
        for col in FEATURES:
            a, b = ours.columns[col], expected.columns[col]
            assert (a.rows, a.missing, a.n) == (b.rows, b.missing, b.n), (engine, col)
            assert [a.quantile(q) for q in (0.25, 0.5, 0.75)] == [b.quantile(q) for q in (0.25, 0.5, 0.75)]


def test_a_missing_s3_source_is_one_line(parts: Path) -> None:
    with pytest.raises(DataError, match=rf"^s3://{BUCKET}/nothing-here: no CSV or parquet file found$"):
        profile_source(f"s3://{BUCKET}/nothing-here", KINDS)
