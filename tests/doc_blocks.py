"""The documentation's command blocks, as written: every ```bash block of README.md and docs/, where it is, and a
way to run one in a shell a user would have."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from selfheal.ops import sandbox

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))


@dataclass(frozen=True)
class Block:
    document: str  # README.md, docs/guarding.md
    line: int  # of the opening fence
    kind: str  # bash, yaml, ...
    text: str

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}"


def blocks(kind: str = "bash") -> list[Block]:
    """Every fenced block of that kind in README.md and docs/*.md, in reading order."""
    found = []
    for document in DOCUMENTS:
        text = document.read_text(encoding="utf-8")
        for match in re.finditer(rf"^```{kind}\n(.*?)^```", text, re.S | re.M):
            found.append(Block(document.relative_to(ROOT).as_posix(), text.count("\n", 0, match.start()) + 1,
                               kind, match.group(1)))
    return found


def dvc_blocks() -> list[str]:
    """Every ```bash block of the README with a line that runs dvc."""
    return [b.text for b in blocks() if b.document == "README.md" and re.search(r"^(\S*/)?dvc ", b.text, re.M)]


def block_with(command: str) -> str:
    (block,) = [b for b in dvc_blocks() if command in b]
    return block


def plain_shell(**extra_env: str) -> dict[str, str]:
    """A user's shell beside the checkout: .venv exists but is not on PATH (another `python` may come first)."""
    env = {**sandbox.env(), **extra_env}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if Path(p) != VENV / "bin")
    env.pop("VIRTUAL_ENV", None)
    return env


def run_block(block: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a README block in `cwd` as a user's shell would after `make run`: .venv exists, but it is not on PATH
    (only what the block itself activates)."""
    if not (cwd / ".venv").exists():
        (cwd / ".venv").symlink_to(VENV)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=plain_shell(**extra_env),
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"README block failed ({proc.returncode}):\n{block}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc
