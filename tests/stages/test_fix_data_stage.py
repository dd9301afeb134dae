"""The fix_data stage as DVC runs it: `python -m stages.fix_data` in a project directory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from selfheal.core.atomic import md5_file
from selfheal.core.config import parse_params
from selfheal.ops import sandbox
from selfheal.pipeline.synth import write_default_data

ROOT = Path(__file__).resolve().parents[2]


def run_stage(cwd: Path, params: dict) -> subprocess.CompletedProcess:
    """The stage on the shipped params.yaml with `params`' groups replacing its own (every group must be there)."""
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    (cwd / "params.yaml").write_text(yaml.safe_dump({**shipped, **params}))
    return sandbox.run_stage("fix_data", cwd)


def test_default_data_is_fixed_and_the_raw_file_left_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    params = {"synth": {"rows": 1500, "current_rows": 10}}
    write_default_data(parse_params(params))
    before = md5_file("data/raw/housing.csv")
    result = run_stage(tmp_path, params)
    assert result.returncode == 0, result.stderr
    assert md5_file("data/raw/housing.csv") == before
    clean = pd.read_parquet("data/clean/housing.parquet")
    report = json.loads(Path("metrics/records/data_quality.json").read_text())
    assert len(clean) == report["rows_out"] == 1500 and not clean.isna().any().any()
    assert report["rows_in"] == 1508 and report["duplicates_removed"] == 8
    assert not report["valid_before"] and report["valid_after"]
    assert "Removed 8 duplicate rows" in result.stdout.splitlines()
    assert any(line.startswith("Filled MedInc missing values with median: ") for line in result.stdout.splitlines())
    # at the end: what changed per column, each with the data_quality switch that turns it off
    tail = result.stdout.split("fix_data: changed per column (the data_quality switch in brackets turns that fix "
                               "off):\n")[1].splitlines()
    columns = {line.split(":")[0].strip(): line for line in tail}
    filled = report["columns"]["MedInc"]["missing_filled"]
    assert f"{filled:,} missing filled (fix_missing_values)" in columns["MedInc"]
    assert columns["rows"].strip() == "rows: 8 duplicates removed (drop_duplicates)"
    capped = [c for c, v in report["columns"].items() if v.get("outliers_capped")]
    assert all(f"{report['columns'][c]['outliers_capped']:,} outliers capped (cap_outliers)" in columns[c]
               for c in capped)


def test_a_classification_csv_with_a_categorical_column(tmp_path) -> None:
    rows = ["size,city,churn"] + [f"{i % 17 + 0.5},{'LA' if i % 3 else 'SF'},{'yes' if i % 2 else 'no'}"
                                  for i in range(60)]
    rows[5] = "?,LA,yes"
    rows[6] = "3.5,,no"
    (tmp_path / "churn.csv").write_text("\n".join(rows) + "\n")
    result = run_stage(tmp_path, {"data": {"raw": "churn.csv", "clean": "clean.parquet", "target": "churn",
                                           "task": "classification"}})
    assert result.returncode == 0, result.stderr
    clean = pd.read_parquet(tmp_path / "clean.parquet")
    assert set(clean.churn) == {"yes", "no"} and set(clean.city) == {"LA", "SF"} and clean["size"].notna().all()
    assert "Filled city missing values with mode: LA (1 values)" in result.stdout


@pytest.mark.parametrize(
    "content, params, problem",
    [
        (None, {}, "file not found"),
        ("", {}, "file is empty"),
        ("a,MedHouseVal\n", {}, "header only"),
        ("\x00\x01\x02binary\x00", {}, "binary"),
        ("a,price\n1,2\n", {}, "target column 'MedHouseVal' not found"),
        ("a,b,MedHouseVal\n1,,2\n3,,4\n", {}, "column 'b' is entirely empty"),
        ("a,MedHouseVal\n1,2\n", {"data": {"raw": "in.csv", "ranges": {"zzz": [0, 1]}}}, "unknown column"),
    ],
)
def test_unfixable_input_is_one_error_line_and_exit_2(tmp_path, content, params, problem) -> None:
    if content is not None:
        (tmp_path / "in.csv").write_text(content)
    result = run_stage(tmp_path, params or {"data": {"raw": "in.csv"}})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and problem in line
    if "unknown column" not in problem:
        assert line.startswith("error: in.csv: ")
    assert not (tmp_path / "data" / "clean").exists()


def test_an_infinite_target_is_dropped_and_train_runs(tmp_path, monkeypatch) -> None:
    """`1e309` in the target was "Data valid"; train then failed with a traceback."""
    monkeypatch.chdir(tmp_path)
    params = {"synth": {"rows": 600, "current_rows": 10}, "train": {"model": "linear"}}
    write_default_data(parse_params(params))
    lines = Path("data/raw/housing.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",1e309"
    Path("data/raw/housing.csv").write_text("\n".join(lines) + "\n")
    result = run_stage(tmp_path, params)
    assert result.returncode == 0, result.stderr
    assert "Treated 1 non-finite values (inf, 1e309) in MedHouseVal as missing" in result.stdout
    assert json.loads(Path("metrics/records/data_quality.json").read_text())["target_missing_dropped"] == 1
    trained = sandbox.run_stage("train", tmp_path, SELFHEAL_MLFLOW="0")
    assert trained.returncode == 0, trained.stderr
    assert Path("models/model.joblib").is_file()
