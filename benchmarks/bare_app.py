"""The stack's own limit, for the service benchmark: a bare FastAPI app (no validation, batching, metrics or
recovery) serving the same model as selfheal's service. POST /predict takes a record or a list of records.

Run: SELFHEAL_BARE_MODEL=models/model.joblib uvicorn benchmarks.bare_app:app
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
from fastapi import FastAPI

from selfheal.pipeline.artifact import load_model

_model = load_model(os.environ.get("SELFHEAL_BARE_MODEL", "models/model.joblib"))
_names = [f["name"] for f in _model.features]
app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: dict[str, Any] | list[dict[str, Any]]) -> dict[str, list[float]]:
    records = body if isinstance(body, list) else [body]
    return {"predictions": _model.pipeline.predict(pd.DataFrame(records, columns=_names)).tolist()}
