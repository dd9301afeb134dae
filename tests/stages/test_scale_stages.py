"""A large (here: above a tiny partition_mb) input is fixed in partitions
into a parquet directory the train stage reads, with the same rows as the in-memory path; fix-data writes its CSV
with pyarrow and the values read back unchanged; monitor's Evidently run is on a seeded sample that drift.json
names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from selfheal.core import workspace
from selfheal.core.config import parse_params
from selfheal.healing.filefix import write_csv
from selfheal.ops import sandbox
from selfheal.pipeline.checks import read_csv_checked
from selfheal.pipeline.synth import FEATURES, make_housing, write_default_data


def _stage(cwd: Path, params: dict, stage: str = "fix_data"):
    """Run a stage with the project's params.yaml (every group, as DVC requires), `params` merged per group."""
    (cwd / "params.yaml").write_text((sandbox.SOURCE / "params.yaml").read_text())
    sandbox.set_params(cwd, **params)
    return sandbox.run_stage(stage, cwd)


def test_fix_data_above_partition_mb_writes_parquet_parts_equal_to_the_in_memory_result(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    params: dict = {"synth": {"rows": 3000, "current_rows": 10}}
    write_default_data(parse_params(params))
    small = _stage(tmp_path, params)
    assert small.returncode == 0, small.stderr
    single = pd.read_parquet("data/clean/housing.parquet")
    single_report = json.loads(workspace.DATA_QUALITY.read_text())
    assert Path("data/clean/housing.parquet").is_file()

    large = _stage(tmp_path, {**params, "scale": {"partition_mb": 0.05}})
    assert large.returncode == 0, large.stderr
    parts = Path("data/clean/housing.parquet")
    assert parts.is_dir() and len(list(parts.glob("part-*.parquet"))) >= 4
    report = json.loads(workspace.DATA_QUALITY.read_text())
    assert report.pop("engine") == "local" and report.pop("partitions") >= 4
    assert report == single_report
    pd.testing.assert_frame_equal(pd.read_parquet(parts), single, check_dtype=False)
    assert large.stdout == small.stdout  # the same summary lines

    back = _stage(tmp_path, params)  # small again: one file replaces the directory
    assert back.returncode == 0, back.stderr
    assert Path("data/clean/housing.parquet").is_file()


def test_fix_data_csv_writer_keeps_every_value(tmp_path) -> None:
    rng = np.random.default_rng(0)
    frame = make_housing(500, seed=4).assign(
        ocean=pd.Series(rng.choice(["NEAR BAY", "a,b", 'say "x"', " padded"], 500), dtype="str")
    )
    frame.loc[3, "MedInc"] = 0.1 + 0.2  # a float that needs all 17 digits
    write_csv(frame, tmp_path / "out.csv")
    back = read_csv_checked(tmp_path / "out.csv")
    assert list(back.columns) == list(frame.columns)
    for col in FEATURES:
        np.testing.assert_array_equal(back[col].astype(float).to_numpy(), frame[col].to_numpy())
    assert back["ocean"].tolist() == frame["ocean"].tolist()


