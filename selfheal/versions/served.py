"""What the service serves: production's model, by the md5s the registry's production version pins.

Production is the latest assignment in the registry (GTO tags); its commit's dvc.lock pins the model file and
its metadata. Their bytes come from the DVC cache (or the workspace when it holds exactly those bytes, or the
DVC remote when neither does), verified by md5 before anyone unpickles them. The workspace's model file is a
candidate until promoted, so a service restarted after a candidate was built still serves production.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import current
from selfheal.versions import checkout
from selfheal.versions.catalog import Versions


@dataclass(frozen=True)
class Served:
    version: str
    md5: str
    model: bytes
    meta: bytes


def production_model(cwd: str | Path = ".", model: str | Path = workspace.MODEL) -> Served:
    """Production's model file and metadata, verified; an error naming what is missing otherwise."""
    versions = Versions(current(cwd), cwd)
    version = versions.production()
    if version is None:
        raise SelfHealError("no model in production yet: `selfheal heal` (or `selfheal promote`) promotes a validated "
                            "model; the service serves only promoted versions")
    record = versions.record(version)
    md5, meta_md5 = record.get("md5"), record.get("meta_md5")
    if not md5 or not meta_md5:
        raise SelfHealError(f"{version.tag}: its commit's dvc.lock pins no {model} and its metadata file")
    source = checkout.from_workspace(cwd)

    def fetch() -> None:
        checkout.fetch_revision(version.commit, cwd)

    data = checkout.verified(str(model), md5, source, cwd, fetch)
    meta = checkout.verified(str(Path(model).with_suffix(".json")), meta_md5, source, cwd, fetch)
    return Served(version.name, md5, data, meta)
