"""The model artifact contract shared by train, validate, monitor, the registry and the service.

A model is two files: `model.joblib` (a fitted scikit-learn Pipeline that takes a DataFrame of the feature
columns) and `model.json` (what the service and the drift monitor need to know about it, without unpickling).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
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


def _registered_version(model_path: Path, md5: str) -> str | None:
    """The registered version name (e.g. v0.0.3) when these bytes are production's, so /health can say it."""
    record = workspace.read_production(model_path.parent / workspace.PRODUCTION.name)
    return record["version"] if record and record.get("md5") == md5 else None


def trusted_md5s(model_path: str | Path, root: str | Path = ".") -> dict[str, str]:
    """The md5s these model bytes may have, each with where it is recorded: the production record beside the
    model (models/production.json, tracked by git) and dvc.lock's outs for this path (the trained candidate).

    Never model.json: whoever can replace model.joblib can replace the file next to it too.
    """
    model_path = Path(model_path)
    trusted = {}
    production_path = model_path.parent / workspace.PRODUCTION.name
    record = workspace.read_production(production_path)
    if record and record.get("md5"):
        trusted[str(record["md5"])] = f"{production_path} ({record['version']})"
    lock_path = Path(root) / workspace.DVC_LOCK
    try:
        key = str(model_path.resolve().relative_to(Path(root).resolve()))
    except ValueError:
        key = str(model_path)
    for out in _lock_outs(lock_path):
        if out.get("path") == key and out.get("md5"):
            trusted.setdefault(str(out["md5"]), str(lock_path))
    return trusted


def _lock_outs(lock_path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        return []
    return [o for stage in stages.values() if isinstance(stage, dict) for o in stage.get("outs") or []
            if isinstance(o, dict)]


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


def load_model(model_path: str | Path = workspace.MODEL, expected_md5: str | None = None,
               trusted: Mapping[str, str] | None = None) -> LoadedModel:
    """Load fully and verify before anyone uses it: a corrupt or mismatched file raises, nothing half-loaded.

    `trusted` (md5 -> where it is recorded, see trusted_md5s): the bytes must have one of these md5s, checked
    before unpickling (a pickle runs code)."""
    import joblib

    model_path = Path(model_path)
    meta_path = meta_path_for(model_path)
    if not model_path.exists():
        raise SelfHealError(f"{model_path}: no model (run `make run` or `dvc repro` first)")
    if not meta_path.exists():
        raise SelfHealError(f"{meta_path}: model metadata missing")
    data = model_path.read_bytes()
    import hashlib

    md5 = hashlib.md5(data).hexdigest()
    if expected_md5 is not None and md5 != expected_md5:
        raise SelfHealError(f"{model_path}: md5 {md5} does not match the expected {expected_md5}")
    if trusted is not None and md5 not in trusted:
        where = " or ".join(sorted(set(trusted.values()))) or "nowhere"
        raise SelfHealError(f"{model_path}: md5 {md5} is not the hash recorded in {where}; not loading it")
    meta = atomic.read_json(meta_path)
    if not meta.get("version"):
        meta = {**meta, "version": _registered_version(model_path, md5)}
    try:
        pipeline = joblib.load(io.BytesIO(data))
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise SelfHealError(f"{model_path}: cannot load the model ({type(exc).__name__}: {exc})") from None
    if not hasattr(pipeline, "predict"):
        raise SelfHealError(f"{model_path}: not a model (no predict method)")
    return LoadedModel(pipeline=pipeline, meta=meta, md5=md5)
