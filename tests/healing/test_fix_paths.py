"""`selfheal fix-data`'s two paths: a CSV of plain numbers is fixed on arrays without importing pandas
(numfix), any other through fixes.fix; both give the same fixed file and the same report."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal.core import audit, workspace
from selfheal.core.config import parse_params
from selfheal.healing.filefix import fix_file
from selfheal.pipeline import numfix
from selfheal.pipeline.checks import infer_schema, read_csv_typed
from selfheal.pipeline.csvread import float_columns, numbers_table
from selfheal.pipeline.fixes import fix
from selfheal.pipeline.schema import schema_of
from selfheal.pipeline.synth import inject_faults, make_housing

ROOT = Path(__file__).resolve().parents[2]
TARGET = "MedHouseVal"
SWITCHES = [{}, {"fix_missing_values": False}, {"cap_outliers": False}, {"drop_duplicates": False},
            {"auto_fix_enabled": False}]


def numbers_csv(path: Path, seed: int) -> Path:
    """Plain numbers with missing cells, outliers, duplicates (some made by the capping), rows without a target
    and values outside a declared range."""
    df = inject_faults(make_housing(500, seed), missing=0.03, outliers=0.02, duplicates=0.05, dtype_errors=0,
                       seed=seed)
    rng = np.random.default_rng(seed)
    df.loc[rng.choice(len(df), 5, replace=False), TARGET] = np.nan
    df.loc[rng.choice(len(df), 4, replace=False), "HouseAge"] = 500.0
    outliers = df.sample(10, random_state=seed).assign(MedInc=1e6)  # capped to one value: then duplicates
    pd.concat([df, outliers, outliers.assign(MedInc=2e6)]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("switches", SWITCHES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_array_fix_gives_the_pandas_fix_data_and_report(tmp_path: Path, seed: int, switches: dict) -> None:
    path = numbers_csv(tmp_path / "numbers.csv", seed)
    dq = parse_params({"data_quality": switches}).data_quality
    ranges = {"HouseAge": (1, 60)}
    columns = float_columns(numbers_table(path))
    assert columns is not None
    arrays, report, _ = numfix.fix_columns(columns, schema_of(list(columns), lambda _: True, TARGET, ranges=ranges),
                                           dq, str(path))
    raw = read_csv_typed(path)
    frame, expected = fix(raw, infer_schema(raw, TARGET, ranges=ranges), dq, str(path))
    assert report == expected
    pd.testing.assert_frame_equal(pd.DataFrame(arrays), frame)
    if not switches:  # the data has every fault, and all were fixed
        assert report["duplicates_removed"] > 25 and report["target_missing_dropped"] == 5 and report["valid_after"]
        assert report["columns"]["HouseAge"]["out_of_range"] >= 4
        assert report["columns"]["MedInc"]["outliers_capped"] > 0 and report["columns"]["MedInc"]["missing_filled"]


def test_row_hashes_and_duplicates_are_pandas_own(tmp_path: Path) -> None:
    """numfix hashes rows as pandas.util.hash_pandas_object does (NaN, -0.0 and text columns included) and
    finds the later copies pandas' duplicated finds, also for hashes that share their leading bits."""
    from selfheal.pipeline.checks import row_hashes

    frame = pd.DataFrame({"a": [1.0, np.nan, -0.0, 0.0, 1.0, np.nan], "b": pd.Series(["x", None, "y", "y", "x", None],
                                                                                      dtype="str")})
    assert (row_hashes(frame) == pd.util.hash_pandas_object(frame, index=False).to_numpy()).all()
    rng = np.random.default_rng(0)
    for hashes in (rng.integers(0, 2**63, 300, dtype=np.uint64)[rng.integers(0, 300, 100_000)],
                   np.arange(5000, dtype=np.uint64) % np.uint64(97),  # all in the first slot of the first round
                   np.zeros(0, dtype=np.uint64)):
        assert (numfix.duplicated(hashes) == pd.Series(hashes).duplicated().to_numpy()).all()


def _fix_file(path: Path, pending: Future | None = None) -> dict:
    entry = fix_file(path, parse_params({"data": {"ranges": {"HouseAge": [1, 60]}}}), pending)
    return {k: v for k, v in entry.items() if k not in ("timestamp", "data_path", "backup", "duration_s", "reason")}


def test_fix_data_writes_the_same_file_and_log_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    arrays, text = numbers_csv(tmp_path / "arrays.csv", 3), tmp_path / "text.csv"
    text.write_bytes(arrays.read_bytes())
    original = arrays.read_bytes()
    fast = _fix_file(arrays)
    fast_lines = capsys.readouterr().out
    read_as_text: Future = Future()
    read_as_text.set_result(None)  # as when the number reader declines: every column is read as text, then pandas
    slow = _fix_file(text, read_as_text)
    assert fast == slow and fast["changes"] > 0
    assert fast_lines.splitlines()[:-1] == capsys.readouterr().out.splitlines()[:-1]  # the last: the backup's name
    assert arrays.read_bytes() == text.read_bytes() != original
    assert len(audit.entries(workspace.DATA_FIX_LOG)) == 2
    assert [b.read_bytes() for b in Path(".selfheal/backups").rglob("arrays.csv")] == [original]


def _imports_pandas(path: Path, cwd: Path) -> bool:
    """Whether `selfheal fix-data` on `path` imported pandas (run in a fresh interpreter)."""
    code = ("import sys; from selfheal.cli import main\n"
            "try: main()\n"
            "except SystemExit: pass\n"
            "print(json.dumps('pandas' in sys.modules))")
    run = subprocess.run([sys.executable, "-c", "import json\n" + code, "fix-data", "--data-path", str(path),
                          "--params", str(ROOT / "params.yaml")], cwd=cwd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_only_files_of_plain_numbers_skip_pandas(tmp_path: Path) -> None:
    numbers = numbers_csv(tmp_path / "numbers.csv", 4)
    assert _imports_pandas(numbers, tmp_path) is False
    assert pd.read_csv(numbers).notna().all().all()  # fixed all the same
    words = tmp_path / "words.csv"
    numbers_csv(words, 5)
    df = pd.read_csv(words).assign(ocean=lambda d: np.where(d.index % 3, "INLAND", "NEAR BAY"))
    df.loc[[1, 2], "ocean"] = None
    df.to_csv(words, index=False)
    assert _imports_pandas(words, tmp_path) is True  # a text column: the pandas path
    fixed = pd.read_csv(words)
    assert fixed["ocean"].notna().all() and len(fixed) < len(df)
