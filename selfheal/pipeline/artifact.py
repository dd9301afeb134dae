"""The model artifact contract shared by train, validate, monitor, the registry and the service.

A model is two files: `model.joblib` (a fitted scikit-learn Pipeline that takes a DataFrame of the feature
columns) and `model.json` (what the service and the drift monitor need to know about it, without unpickling).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError


@dataclass(frozen=True)
class LoadedModel:
    pipeline: Any
    meta: dict[str, Any]
    md5: str

    @property
    def features(self) -> list[dict[str, Any]]:
        """[{"name": ..., "kind": "numeric"|"categorical", "categories": [...]?}, ...] in training order."""
        return self.meta["features"]

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.features]

    @property
    def version(self) -> str:
        return str(self.meta.get("version") or self.md5[:12])


def meta_path_for(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def save_model(pipeline: Any, meta: dict[str, Any], model_path: str | Path = workspace.MODEL) -> str:
    """Write the pipeline and its metadata atomically; returns the md5 of the model bytes (as DVC records it)."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(pipeline, buf, compress=3)
    data = buf.getvalue()
    atomic.write_bytes(model_path, data)
    md5 = atomic.md5_file(model_path)
    atomic.write_json(meta_path_for(model_path), {**meta, "md5": md5})
    return md5


def load_model(model_path: str | Path = workspace.MODEL, expected_md5: str | None = None) -> LoadedModel:
    """Load the workspace model fully and verify it before anyone uses it: a corrupt or mismatched file raises,
    nothing half-loaded."""
    model_path = Path(model_path)
    meta_path = meta_path_for(model_path)
    if not model_path.exists():
        raise SelfHealError(f"{model_path}: no model (run `make run` or `dvc repro` first)")
    if not meta_path.exists():
        raise SelfHealError(f"{meta_path}: model metadata missing")
    data = model_path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    if expected_md5 is not None and md5 != expected_md5:
        raise SelfHealError(f"{model_path}: md5 {md5} does not match the expected {expected_md5}")
    return from_bytes(data, meta_path.read_bytes(), str(model_path))


def from_bytes(data: bytes, meta: bytes, source: str, version: str | None = None) -> LoadedModel:
    """A model from its verified bytes and metadata (a pickle runs code: check the md5 before calling this);
    `source` names where the bytes came from in errors, `version` is the registered name when there is one."""
    import joblib

    try:
        meta_doc = json.loads(meta)
    except ValueError as exc:
        raise SelfHealError(f"{meta_path_for(source)}: not valid JSON ({exc})") from None
    if not isinstance(meta_doc, dict):
        raise SelfHealError(f"{meta_path_for(source)}: expected a JSON object")
    if version:
        meta_doc = {**meta_doc, "version": version}
    try:
        pipeline = joblib.load(io.BytesIO(data))
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SelfHealError(f"{source}: cannot load the model ({type(exc).__name__}: {exc})") from None
    if not hasattr(pipeline, "predict"):
        raise SelfHealError(f"{source}: not a model (no predict method)")
    return LoadedModel(pipeline=pipeline, meta=meta_doc, md5=hashlib.md5(data).hexdigest())
