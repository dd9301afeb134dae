"""The monitor stage as DVC runs it: `python -m stages.monitor` in a project directory, as a real process."""

from __future__ import annotations

import csv
import json
import random
import subprocess
from pathlib import Path

import pytest

from selfheal.core import workspace
from selfheal.core.atomic import md5_file
from selfheal.core.config import load_params
from selfheal.ops import sandbox
from selfheal.ops.sandbox import run_stage
from selfheal.pipeline.artifact import save_model
from selfheal.pipeline.synth import FEATURES, inject_faults, make_current, make_housing
from selfheal.pipeline.training import train

ROOT = Path(__file__).resolve().parents[2]
CURRENT = Path("data/current/housing.csv")


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """A project dir with params.yaml, a trained (linear, fast) model and its drift reference; no current batch."""
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    params = load_params(tmp_path / "params.yaml")
    params.train.model = "linear"
    pipeline, meta, reference, _ = train(make_housing(2000, seed=1), params)
    save_model(pipeline, meta, tmp_path / "models/model.joblib")
    reference.to_parquet(tmp_path / workspace.REFERENCE, index=False)
    (tmp_path / CURRENT).parent.mkdir(parents=True)
    return tmp_path


def _stage(cwd: Path) -> subprocess.CompletedProcess:
    return run_stage("monitor", cwd)


def test_drifted_dirty_batch_writes_metrics_and_plot_and_the_report_on_demand(workdir: Path) -> None:
    current = inject_faults(
        make_current(1500, drift=1.0, seed=7), missing=0.01, outliers=0.0, duplicates=0.0, dtype_errors=0.01, seed=7
    )
    current.to_csv(workdir / CURRENT, index=False)
    proc = _stage(workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "monitor: drift detected: 6/8 columns drifted (0.75 >= 0.50); prediction drift: yes"

    metrics = json.loads((workdir / "metrics/records/drift.json").read_text())
    assert metrics["drift_detected"] is True and metrics["drift_score"] == 0.75 == metrics["share_of_drifted_columns"]
    # which model the report describes: heal measures drift again when the model changed
    assert metrics["model_md5"] == md5_file(workdir / "models/model.joblib")
    assert (metrics["number_of_drifted_columns"], metrics["number_of_columns"], metrics["threshold"]) == (6, 8, 0.5)
    assert metrics["prediction_drifted"] is True and metrics["target_drifted"] is False
    assert sorted(name for name, col in metrics["columns"].items() if not col["drifted"]) == ["Latitude", "Longitude"]
    assert set(metrics["columns"]["MedInc"]) >= {"drift_score", "drifted", "stattest"}
    # dirty cells (2% of feature cells) are left out, not fatal: some rows get no prediction
    assert metrics["current_rows"] == 1500 and 1000 < metrics["current_rows_predicted"] < 1500

    assert not (workdir / "monitoring/drift_report.html").exists()  # Evidently's HTML: on demand only
    made = sandbox.run(["selfheal", "drift-report"], workdir)
    assert made.stdout.strip() == "drift-report: wrote monitoring/drift_report.html"
    html = (workdir / "monitoring/drift_report.html").read_text()
    assert "Dataset Drift is detected." in html
    with open(workdir / "metrics/plots/drift.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["column"] for r in rows] == FEATURES
    assert {r["column"]: r["drifted"] for r in rows}["MedInc"] == "True"
    assert not list(workdir.rglob(".*.tmp"))  # atomic writes leave nothing behind


def test_batch_missing_a_feature_is_one_line_error_exit_2(workdir: Path) -> None:
    make_housing(100, seed=3).drop(columns=["MedInc"]).to_csv(workdir / CURRENT, index=False)
    proc = _stage(workdir)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {CURRENT}: missing feature column(s) ['MedInc'] that the model needs")
    assert "set data.current in params.yaml to a batch with the columns of the training data" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (workdir / "metrics/drift.json").exists() and not (workdir / "metrics/records/drift.json").exists()


@pytest.mark.parametrize("outliers", [0.002, 0.01], ids=["default-data", "more-outliers"])
def test_a_sample_of_the_training_data_is_not_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    outliers: float) -> None:
    """The reference is capped training data, the batch raw; a random sample of the raw training data
    used to show drift (4 of 8 columns on the default data)."""
    import yaml

    from selfheal.pipeline.synth import write_default_data

    doc = yaml.safe_load((ROOT / "params.yaml").read_text())
    doc["synth"]["outliers"], doc["train"]["model"] = outliers, "linear"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.chdir(tmp_path)
    write_default_data(load_params(tmp_path / "params.yaml"))
    raw = tmp_path / "data/raw/housing.csv"
    lines = raw.read_text().splitlines()
    sample = random.Random(1).sample(lines[1:], 5000)
    (tmp_path / CURRENT).write_text("\n".join([lines[0], *sample]) + "\n")
    for stage in ("fix_data", "train", "monitor"):
        proc = run_stage(stage, tmp_path, SELFHEAL_MLFLOW="0")
        assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / workspace.DRIFT).read_text())
    assert [name for name, col in metrics["columns"].items() if col["drifted"]] == []
    assert metrics["drift_detected"] is False and metrics["prediction_drifted"] is False


def test_a_batch_streamed_in_partitions_gives_the_record_of_the_whole_batch_in_memory(workdir: Path) -> None:
    """Every row of the batch is tested, one partition in memory at a time (a few KB each here): the record equals
    drift of the whole batch typed, capped and predicted in memory."""
    import pandas as pd

    from selfheal.core.atomic import read_json
    from selfheal.ops.sandbox import set_params
    from selfheal.pipeline import engine
    from selfheal.pipeline.artifact import load_model
    from selfheal.pipeline.checks import read_csv_checked
    from selfheal.pipeline.drift import cap_like_training, coerce_features, detect_drift, predict_batch
    from selfheal.pipeline.metrics import rounded
    from selfheal.pipeline.training import PREDICTION

    inject_faults(make_current(3000, drift=0.3, seed=5), missing=0.01, outliers=0.0, duplicates=0.0,
                  dtype_errors=0.01, seed=5).to_csv(workdir / CURRENT, index=False)
    set_params(workdir, scale={"partition_mb": 0.05})
    assert len(engine.partitions(str(workdir / CURRENT), 0.05)) >= 5
    proc = _stage(workdir)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((workdir / "metrics/records/drift.json").read_text())
    assert record["current_rows"] == 3000 and "sampled" not in record

    model = load_model(workdir / "models/model.joblib")
    whole = coerce_features(read_csv_checked(workdir / CURRENT), model.features, "current")
    whole = cap_like_training(whole, model.features, read_json(workdir / workspace.DATA_QUALITY))
    whole[PREDICTION] = predict_batch(model.pipeline, whole, model.features, "current")
    expected = detect_drift(pd.read_parquet(workdir / workspace.REFERENCE), whole, model.features, "MedHouseVal",
                            "regression", 0.5)
    assert {k: v for k, v in record.items() if k != "model_md5"} == rounded(expected)
