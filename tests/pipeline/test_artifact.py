"""The model artifact: saved atomically, loaded only when whole and as expected, named by its registered version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from selfheal.core.atomic import md5_file
from selfheal.core.errors import SelfHealError
from selfheal.pipeline import artifact

META = {"task": "regression", "target": "y", "model": "linear", "params": {},
        "features": [{"name": "x", "kind": "numeric"}]}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, str]:
    frame = pd.DataFrame({"x": np.arange(20.0)})
    model = LinearRegression().fit(frame, 2 * frame["x"] + 1)
    path = tmp_path / "models" / "model.joblib"
    return path, artifact.save_model(model, META, path)


def test_round_trip_records_the_dvc_md5(saved: tuple[Path, str]) -> None:
    path, md5 = saved
    assert md5 == md5_file(path)
    loaded = artifact.load_model(path, expected_md5=md5)
    assert loaded.feature_names == ["x"]
    assert loaded.pipeline.predict(pd.DataFrame({"x": [3.0]}))[0] == pytest.approx(7.0)
    assert json.loads(artifact.meta_path_for(path).read_text())["md5"] == md5
    assert loaded.version == md5[:12]  # nothing registered: the md5 prefix names it


def test_from_bytes_names_the_registered_version(saved: tuple[Path, str]) -> None:
    path, md5 = saved
    meta = artifact.meta_path_for(path).read_bytes()
    loaded = artifact.from_bytes(path.read_bytes(), meta, "model@v0.0.3", "v0.0.3")
    assert (loaded.version, loaded.md5) == ("v0.0.3", md5)
    assert loaded.pipeline.predict(pd.DataFrame({"x": [1.0]}))[0] == pytest.approx(3.0)
    with pytest.raises(SelfHealError, match=r"model@v0\.0\.3: cannot load the model"):
        artifact.from_bytes(b"not a model", meta, "model@v0.0.3")
    with pytest.raises(SelfHealError, match="not valid JSON"):
        artifact.from_bytes(path.read_bytes(), b"{", str(path))


def test_wrong_or_corrupt_bytes_are_refused(saved: tuple[Path, str]) -> None:
    path, _md5 = saved
    with pytest.raises(SelfHealError, match="does not match the expected"):
        artifact.load_model(path, expected_md5="f" * 32)
    path.write_bytes(b"not a model")
    with pytest.raises(SelfHealError, match="cannot load the model"):
        artifact.load_model(path)
    path.unlink()
    with pytest.raises(SelfHealError, match="no model"):
        artifact.load_model(path)
