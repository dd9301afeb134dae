"""Missing values in the training data -> the service accepts null for those numeric columns (as the Hands-On ML
data's 207 missing total_bedrooms must be), through the real stages and a real service. Small synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from selfheal.ops import sandbox
from selfheal.pipeline.synth import TARGET, make_housing
from tests.servicekit import free_port, start_service, stop_all, url_of, wait_status

pytestmark = pytest.mark.xdist_group("service")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fix_data + train on 400 rows with 30 missing AveBedrms and an ocean_proximity text column."""
    root = tmp_path_factory.mktemp("nullable")
    df = make_housing(400, seed=3)
    df.insert(0, "ocean_proximity", np.where(df["Latitude"] > 36, "NEAR BAY", "INLAND"))
    df.loc[df.sample(30, random_state=1).index, "AveBedrms"] = np.nan
    (root / "data/raw").mkdir(parents=True)
    df.to_csv(root / "data/raw/housing.csv", index=False)
    (root / "params.yaml").write_text((sandbox.SOURCE / "params.yaml").read_text())
    sandbox.set_params(root, data={"target": TARGET}, train={"hist_gradient_boosting": {"max_iter": 20}})
    for stage in ("fix_data", "train"):
        result = sandbox.run_stage(stage, root, SELFHEAL_MLFLOW="0")
        assert result.returncode == 0, result.stderr
    return root


def test_train_records_which_numeric_features_had_missing_values(trained: Path) -> None:
    features = {f["name"]: f for f in json.loads((trained / "models/model.json").read_text())["features"]}
    assert features["AveBedrms"]["nullable"] is True
    assert features["MedInc"]["nullable"] is False and "nullable" not in features["ocean_proximity"]
    assert not pd.read_parquet(trained / "data/clean/housing.parquet")["AveBedrms"].isna().any()  # fix_data filled


def test_service_accepts_null_where_the_model_saw_missing_values(trained: Path) -> None:
    url = url_of(free_port())
    raw = pd.read_csv(trained / "data/raw/housing.csv").drop(columns=[TARGET])
    rows = json.loads(raw[raw["AveBedrms"].isna()].head(3).to_json(orient="records"))  # null, as JSON has it
    assert rows[0]["AveBedrms"] is None
    try:
        start_service(trained, int(url.rsplit(":", 1)[1]))
        wait_status(url)
        one = requests.post(url + "/predict", json=rows[0], timeout=10)
        assert one.status_code == 200, one.text
        batch = requests.post(url + "/predict", json=rows, timeout=10)  # every value of the column missing
        assert batch.status_code == 200, batch.text
        assert all(np.isfinite(batch.json()["predictions"])) and len(batch.json()["predictions"]) == 3
        elsewhere = requests.post(url + "/predict", json=[rows[1], {**rows[0], "MedInc": None}], timeout=10)
        assert elsewhere.status_code == 422  # a column without missing values in training still refuses null
        assert "record 1: field 'MedInc'" in elsewhere.json()["message"]
    finally:
        stop_all(trained)
