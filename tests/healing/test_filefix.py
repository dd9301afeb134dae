"""`selfheal fix-data`: the guide's in-place fixer - backup first, the fix_data stage's fixes, a log entry."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.core import audit, workspace
from selfheal.core.config import parse_params
from selfheal.core.errors import DataError
from selfheal.healing.filefix import fix_file
from selfheal.pipeline.checks import infer_schema, read_csv_checked, validate
from selfheal.pipeline.synth import inject_faults, make_housing

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """400 rows with missing values, outliers, duplicates and text in numeric columns."""
    monkeypatch.chdir(tmp_path)
    df = inject_faults(make_housing(400, 7), missing=0.02, outliers=0.01, duplicates=0.02, dtype_errors=0.01, seed=7)
    path = tmp_path / "data" / "raw" / "housing.csv"
    path.parent.mkdir(parents=True)
    df.to_csv(path, index=False)
    return path


def problems(path: Path) -> list:
    df = read_csv_checked(path)
    return validate(df, infer_schema(df, "MedHouseVal"))


def test_fixes_in_place_with_backup_summary_and_log(dirty: Path, capsys: pytest.CaptureFixture) -> None:
    original, inode = dirty.read_bytes(), dirty.stat().st_ino
    assert problems(dirty)
    entry = fix_file(dirty, parse_params({}))
    out = capsys.readouterr().out
    assert problems(dirty) == []
    assert "✅ Removed 8 duplicate rows" in out
    assert "Filled MedInc missing values with median:" in out and "Capped" in out and "outliers in" in out
    backups = list(Path(".selfheal/backups").rglob("housing.csv"))
    assert len(backups) == 1 and backups[0].read_bytes() == original
    assert backups[0].stat().st_ino == inode != dirty.stat().st_ino  # the old file linked, not copied; a new one
    logged = audit.entries(workspace.DATA_FIX_LOG)
    assert logged == [entry]
    assert entry["success"] is True and entry["rows_in"] == 408 and entry["rows_out"] == 400
    assert entry["problems_before"] > 0 and entry["problems_after"] == 0 and entry["backup"]
    assert {"timestamp", "action", "reason", "success"} <= set(entry)


def test_clean_file_is_left_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "clean.csv"
    path.write_text("MedInc,HouseAge,MedHouseVal\n" + "".join(f"{i % 7 + 1},{i % 11 + 5},{i % 5 + 1}\n" for i in range(60)))
    original = path.read_bytes()
    entry = fix_file(path, parse_params({}))
    assert path.read_bytes() == original and entry["changes"] == 0 and entry["backup"] is None
    assert entry["success"] is True and "unchanged" in capsys.readouterr().out
    assert not Path(".selfheal").exists()


def test_disabled_auto_fix_leaves_the_file_and_fails(dirty: Path) -> None:
    original = dirty.read_bytes()
    entry = fix_file(dirty, parse_params({"data_quality": {"auto_fix_enabled": False}}))
    assert dirty.read_bytes() == original and entry["success"] is False and not Path(".selfheal").exists()


def test_individual_fixes_follow_their_switches(dirty: Path) -> None:
    entry = fix_file(dirty, parse_params({"data_quality": {"fix_missing_values": False}}))
    assert entry["success"] is False  # missing values remain: the data is still invalid
    assert any(p.kind == "missing" for p in problems(dirty))
    assert not any(p.kind in ("duplicates", "dtype_mismatch") for p in problems(dirty))


def test_unfixable_data_is_a_clear_error_and_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "no_target.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="target column 'MedHouseVal' not found"):
        fix_file(path, parse_params({}))
    assert path.read_text() == "a,b\n1,2\n3,4\n" and not Path(".selfheal").exists()


def test_cli_exit_codes_and_one_line_errors(dirty: Path) -> None:
    cmd = [sys.executable, "-c", "from selfheal.cli import main; main()", "fix-data",
           "--params", str(ROOT / "params.yaml")]
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    ok = subprocess.run([*cmd, "--data-path", str(dirty)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "Data valid" in ok.stdout
    missing = subprocess.run([*cmd, "--data-path", "nope.csv"], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: nope.csv: file not found"


def test_a_second_fix_data_is_a_no_op_and_says_so(dirty: Path, capsys: pytest.CaptureFixture) -> None:
    """Fix-data on its own output changes nothing (it used to cap more cells every run)."""
    inject_faults(make_housing(3000, 3), missing=0.05, outliers=0.01, duplicates=0.01, dtype_errors=0.01,
                  seed=3).to_csv(dirty, index=False)
    first = fix_file(dirty, parse_params({}))
    fixed = dirty.read_bytes()
    capsys.readouterr()
    second = fix_file(dirty, parse_params({}))
    assert first["changes"] > 0 and second["changes"] == 0 and second["success"] and second["backup"] is None
    assert dirty.read_bytes() == fixed
    assert f"No issues to fix: {dirty} unchanged" in capsys.readouterr().out


@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_a_fix_rewrites_only_the_lines_it_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eol: str) -> None:
    """A git-tracked CSV keeps its line ends and its unquoted text: the diff of a fix is the fixed line."""
    monkeypatch.chdir(tmp_path)
    rows = [f"{i % 7 + 1},{i % 11 + 5},{('NEAR BAY', 'INLAND')[i % 2]},{i % 5 + 1}" for i in range(60)]
    rows[10] = "1,,INLAND,3"  # a missing HouseAge, filled with the median
    path = tmp_path / "data.csv"
    path.write_bytes(eol.join(["MedInc,HouseAge,ocean_proximity,MedHouseVal", *rows, ""]).encode())
    before = path.read_bytes().split(eol.encode())
    fix_file(path, parse_params({"data": {"target": "MedHouseVal"}}))
    after = path.read_bytes().split(eol.encode())
    assert len(after) == len(before) and b"\n" not in b"".join(after)
    assert [n for n, (old, new) in enumerate(zip(before, after, strict=True)) if old != new] == [11]
    median = statistics.median(i % 11 + 5 for i in range(60) if i != 10)
    assert after[11] == f"1,{median:g},INLAND,3".encode()


def test_a_value_that_needs_quotes_gets_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.csv"
    rows = [f"{i % 7 + 1},{i % 11 + 5},\"Bay, North\",{i % 5 + 1}" for i in range(60)]
    rows[3] = "2,,\"Bay, North\",1"
    path.write_text("MedInc,HouseAge,area,MedHouseVal\n" + "\n".join(rows) + "\n")
    fix_file(path, parse_params({"data": {"target": "MedHouseVal"}}))
    assert read_csv_checked(path)["area"].eq("Bay, North").all() and not problems(path)
