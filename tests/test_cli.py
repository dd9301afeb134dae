"""The `selfheal` entry point as a shell runs it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.heal_support import env, production_of


def test_a_reader_that_goes_away_does_not_stop_heal_midway(project: Path) -> None:
    """`selfheal heal | head -1`, or a log pipe whose reader died: heal still finishes its work, quietly."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE, from the first line on
    try:
        proc = subprocess.run(["selfheal", "heal"], cwd=project, env=env(), stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert production_of(project)["version"] == "v0.0.1"  # the first candidate promoted: the tags say so
