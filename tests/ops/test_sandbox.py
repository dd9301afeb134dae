"""A sandbox is a fresh clone of the source checkout: it never inherits the source's production, tags or records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfheal.ops import sandbox
from tests.conftest import SMALL_SYNTH
from tests.heal_support import production_of, selfheal

pytestmark = pytest.mark.slow


def test_a_sandbox_made_after_a_committed_promotion_starts_as_a_fresh_clone(promoted: Path, tmp_path: Path) -> None:
    """`promoted` is a checkout after a committed promotion (and heal's records): a sandbox copied from it has no
    production, no version tags and no audit records, and its own first heal promotes its own v0.0.1."""
    assert production_of(promoted)["version"] == "v0.0.1"
    repo = sandbox.create(tmp_path / "again", promoted, synth=SMALL_SYNTH)
    assert sandbox.run(["git", "tag"], repo).stdout == "" and production_of(repo) == {}
    assert not (repo / "monitoring").exists() and not (repo / "models").exists()
    sandbox.run(["dvc", "repro"], repo)
    selfheal("heal", cwd=repo)
    assert production_of(repo)["version"] == "v0.0.1"
    assert json.loads(sandbox.run(["dvc", "status", "--json"], repo).stdout) == {}
