"""The served model and its atomic swap.

A reload builds a complete new `Snapshot` off to the side (load, verify the md5, build the request schema,
score one example record) and only then replaces the reference in one assignment. A request takes the snapshot
once and uses it to the end, so it sees the old model or the new one, never a mix; a model that fails any step
is never installed and the old one keeps serving.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfheal.core.clock import now_iso
from selfheal.core.errors import SelfHealError
from selfheal.pipeline import artifact
from selfheal.service.schema import RequestSchema
from selfheal.versions.served import production_model


@dataclass(frozen=True)
class Snapshot:
    model: artifact.LoadedModel
    schema: RequestSchema
    loaded_at: str

    @property
    def version(self) -> str:
        return self.model.version

    def predict(self, records: list[dict[str, Any]]) -> list[Any]:
        import pandas as pd

        frame = pd.DataFrame.from_records(records, columns=self.schema.names)
        return self.model.pipeline.predict(frame).tolist()


def build_snapshot(root: Path, model_path: Path, max_batch_size: int, expected_md5: str | None = None) -> Snapshot:
    """Load and check production's model completely; raises SelfHealError (naming what failed) on any problem.

    The bytes are production's as the registry pins them (selfheal.versions.served), never the workspace's
    candidate; `expected_md5` (a reload after promote or rollback) must be production's md5.
    """
    served = production_model(root, model_path)
    if expected_md5 and expected_md5 != served.md5:
        raise SelfHealError(f"production is {served.version} (md5 {served.md5}), not the expected md5 {expected_md5}")
    model = artifact.from_bytes(served.model, served.meta, f"{served.version}:{model_path}", served.version)
    schema = RequestSchema.from_features(model.features, max_batch_size)
    snapshot = Snapshot(model, schema, now_iso())
    try:
        snapshot.predict([schema.example])
    except Exception as exc:  # a model that cannot score a valid record must not serve
        raise SelfHealError(f"{model_path}: the model fails on a valid record ({type(exc).__name__}: {exc})") from None
    return snapshot


class ModelHolder:
    """Owns the current snapshot; reloads are serialized, reads are a single attribute load."""

    def __init__(self, root: str | Path, model_path: str | Path, max_batch_size: int) -> None:
        self.root, self.model_path = Path(root), Path(model_path)
        self.max_batch_size = max_batch_size
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        self.last_reload_seconds: float | None = None
        self._lock = threading.Lock()

    def reload(self, expected_md5: str | None = None, max_batch_size: int | None = None) -> Snapshot:
        """Install production's model, or raise and keep serving the old one."""
        with self._lock:
            started = time.perf_counter()
            batch = max_batch_size or self.max_batch_size
            try:
                snapshot = build_snapshot(self.root, self.model_path, batch, expected_md5)
            except SelfHealError as exc:
                self.last_error = str(exc)
                raise
            self.current = snapshot  # the atomic swap
            self.max_batch_size = batch
            self.last_error = None
            self.last_reload_seconds = round(time.perf_counter() - started, 3)
            return snapshot
