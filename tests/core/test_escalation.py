"""One escalation state: what one actor handed to a person stays there for every actor until acknowledged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selfheal.core import escalation, workspace


def test_an_escalation_stays_until_a_person_acknowledges_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert escalation.pending("service") is None
    escalation.raise_for("service", "restart storm")
    assert escalation.pending("service")["reason"] == "restart storm"
    done = subprocess.run([str(Path(sys.executable).parent / "selfheal"), "acknowledge", "service"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "acknowledged: service"
    assert escalation.pending("service") is None and (tmp_path / workspace.ESCALATED).exists()
