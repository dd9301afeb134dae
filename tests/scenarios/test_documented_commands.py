"""Every command block of README.md and docs/ has a place: run here as written, in order, from a fresh clone, in a
plain shell (the venv not on PATH, another `python` first) and again activated; or run as written by the test
named beside it; or not runnable here, with the reason. A new block without a place fails the inventory.

The walks change a block only where it cannot run as written in a test: a placeholder path gets a real file, and
a command that runs until stopped (`make serve`, `--watch`) runs in the background or for a few seconds.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.doc_blocks import ROOT, VENV, Block, blocks, plain_shell
from tests.servicekit import stop_all


@dataclass(frozen=True)
class Walk:
    """Run in the named walk, in reading order; `rewrites` replaces a line that starts with the key."""

    name: str
    rewrites: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Covered:
    """Run as written by a test of that file (which says so with the needle)."""

    test_file: str
    needle: str


@dataclass(frozen=True)
class NotHere:
    reason: str


SERVE = ("make serve > /dev/null 2>&1 &  for _ in $(seq 200); do curl -sf localhost:8000/health >/dev/null "
         "&& break; sleep 0.3; done")
GERON = "/path/to/housing.csv"

# (document, the block's first command) -> where it runs
PLACES: dict[tuple[str, str], Walk | Covered | NotHere] = {
    ("README.md", "make run"): Walk("default", {"make test": ": make test is this suite"}),
    ("README.md", "dvc exp run -S"): Covered("tests/stages/test_dvc_usage.py", 'block_with("dvc exp run")'),
    ("README.md", "selfheal heal # once"): Walk("default"),  # the artifacts block: heal, then `dvc artifacts get`
    ("README.md", 'dvc remote add --local --force -d shared "$DVC_REMOTE_URL"'): Covered(
        "tests/versions/test_remote.py", 'block_with("dvc remote add")'),
    ("README.md", ".venv/bin/python -c \"from sklearn.datasets import fetch_california_housing"): NotHere(
        "downloads the data set; the test machines have no internet"),
    ("README.md", f"cp {GERON}"): Walk("own_data"),
    ("README.md", "dvc remove data/raw/housing.csv.dvc"): Walk("own_data"),
    ("README.md", "make heal # fix data"): Walk("default"),
    ("README.md", "cd your-dvc-project && selfheal init"): Covered("tests/ops/test_init.py", '"selfheal", "heal"'),
    ("README.md", "make heal # after `make run`"): Walk("default", {
        "make serve": SERVE, "make recover WATCH=1": "timeout --preserve-status -s INT 5 make recover WATCH=1 "
        "|| [ $? = 130 ]"}),
    ("README.md", "make drill "): Covered("tests/ops/test_drill.py", '"selfheal", "drill", "--quick"'),
    ("README.md", "cd your-project && selfheal drill"): Covered("tests/ops/test_drill_project.py",
                                                               '"selfheal", "drill", "--quick"'),
    ("README.md", "selfheal ci-outputs validation"): Walk("default"),
    ("README.md", "make report "): Walk("default"),
    ("README.md", "make exp "): Covered("tests/ops/test_experiments.py", '"exp-apply"'),
    ("docs/guarding.md", "cd your-dvc-project #"): Covered("tests/ops/test_init.py", '"selfheal", "heal"'),
    ("docs/guarding.md", "SELFHEAL_PROJECT=selfheal.rf.yaml"): Covered("tests/ops/test_init.py", "SELFHEAL_PROJECT"),
    ("docs/guarding.md", "cd your-dvc-project && selfheal drill"): Covered("tests/ops/test_drill_project.py",
                                                                          '"selfheal", "drill", "--quick"'),
}
ACTIVATE = "source .venv/bin/activate"


def _commands(block: Block) -> list[str]:
    """The block's command lines, whitespace runs as one space, without the activation line."""
    lines = (" ".join(line.split()) for line in block.text.splitlines())
    return [line for line in lines if line and not line.startswith(ACTIVATE)]


def _key(block: Block) -> tuple[str, str] | None:
    """The PLACES key of the block: the longest that its first command starts with."""
    first = _commands(block)[0]
    keys = [(doc, key) for doc, key in PLACES if doc == block.document and first.startswith(key)]
    return max(keys, key=lambda k: len(k[1]), default=None)


def _place(block: Block) -> Walk | Covered | NotHere | None:
    key = _key(block)
    return None if key is None else PLACES[key]


def test_every_documented_block_has_a_place() -> None:
    found = blocks()
    unplaced = [f"{b.where}: {_commands(b)[0]}" for b in found if _place(b) is None]
    assert not unplaced, f"blocks with no place in PLACES (run them in a walk, or name the test): {unplaced}"
    used = {_key(b) for b in found}
    assert set(PLACES) == used, f"PLACES names blocks the documents no longer have: {set(PLACES) - used}"
    for place in PLACES.values():
        if isinstance(place, Covered):
            assert place.needle in (ROOT / place.test_file).read_text(), place
        if isinstance(place, Walk):
            assert place.name in ("default", "own_data")


def test_walked_blocks_work_in_a_plain_shell_as_in_an_activated_one() -> None:
    """Activation only puts the venv first on PATH: a walked block that calls selfheal, dvc or python by bare name
    must activate first, or it works only for people who did."""
    for block in blocks():
        if isinstance(_place(block), Walk) and not block.text.startswith(ACTIVATE):
            bare = [c for c in _commands(block) if re.match(r"(selfheal|dvc|python|gto)\b", c.strip())]
            assert not bare, f"{block.where}: {bare} without `{ACTIVATE}` first"


def _clone(tmp_path: Path) -> Path:
    """A fresh clone whose .venv is this suite's (make sees it up to date, as after `make venv`). Without this
    checkout's tags: the walk starts a first day, whatever versions this checkout has registered or promoted."""
    clone = tmp_path / "selfheal"
    subprocess.run(["git", "clone", "-q", "--no-tags", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(VENV)
    for name in ("requirements.lock", "pyproject.toml"):  # older than the venv's stamp: no reinstall
        subprocess.run(["touch", "-d", "2000-01-01", name], cwd=clone, check=True)
    return clone


def _run(block: Block, clone: Path, activated: bool = False, text: str | None = None
         ) -> subprocess.CompletedProcess:
    """The block (or `text`, the block with its placeholder filled) with the walk's rewrites, in a plain shell."""
    place = _place(block)
    assert isinstance(place, Walk)
    lines = (text or block.text).splitlines()
    for key, new in place.rewrites.items():
        hits = [i for i, line in enumerate(lines) if line.startswith(key)]
        assert hits, f"{block.where}: no line starts with {key!r} any more"
        for i in hits:
            lines[i] = new
    script = "\n".join(([ACTIVATE] if activated else []) + lines)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=clone, env=plain_shell(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (f"{block.where} failed ({proc.returncode}):\n{script}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def _walk(name: str) -> list[Block]:
    return [b for b in blocks() if isinstance(place := _place(b), Walk) and place.name == name]


def _git_status(clone: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True).stdout


@pytest.mark.docs
@pytest.mark.timeout(1800)
def test_the_readme_walk_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = _clone(tmp_path)
    try:
        out = {b.where: _run(b, clone).stdout for b in _walk("default")}
        text = "\n".join(out.values())
        assert "Promoted model@v0.0.1 to prod" in text
        assert (clone / "prod_model.joblib").is_file()
        assert '"model_version":"v0.0.1"' in text and '"predictions":[' in text  # the serve block's curls
        assert "metric_name=r2" in text and (clone / "report.md").is_file()
        for block in _walk("default")[2:]:  # after the first promotion, once more in an activated shell
            if "make serve" not in _place(block).rewrites:  # type: ignore[union-attr]  # (it is serving)
                _run(block, clone, activated=True)
    finally:
        stop_all(clone)
    assert _git_status(clone) == "", "the walk left files git does not ignore"


def _geron_shaped(path: Path, rows: int = 3000) -> None:
    """A CSV shaped like the Hands-On ML `housing.csv`: its columns, a text category, missing bedrooms."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "longitude": rng.uniform(-124, -114, rows), "latitude": rng.uniform(32, 42, rows),
        "housing_median_age": rng.integers(1, 52, rows).astype(float),
        "total_rooms": rng.integers(100, 8000, rows).astype(float),
        "total_bedrooms": rng.integers(20, 1500, rows).astype(float),
        "population": rng.integers(50, 5000, rows).astype(float),
        "households": rng.integers(20, 1500, rows).astype(float), "median_income": rng.uniform(0.5, 15, rows)})
    frame["median_house_value"] = (frame.median_income * 40000 + rng.normal(0, 20000, rows)).clip(15000, 500001)
    frame["ocean_proximity"] = rng.choice(["<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY"], rows)
    frame.loc[rng.choice(rows, 30, replace=False), "total_bedrooms"] = np.nan
    frame.to_csv(path, index=False)


@pytest.mark.docs
@pytest.mark.timeout(1800)
def test_the_own_data_recipe_from_a_fresh_clone(tmp_path: Path) -> None:
    """The Hands-On ML recipe: copy the file, point params.yaml at it (the README's yaml block), version it, run."""
    clone = _clone(tmp_path)
    _geron_shaped(tmp_path / "housing.csv")
    copy, version = _walk("own_data")
    _run(copy, clone, text=copy.text.replace(GERON, str(tmp_path / "housing.csv")))
    (settings,) = [b for b in blocks("yaml") if "housing_geron" in b.text]
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["data"].update(yaml.safe_load(settings.text)["data"])  # what the README says to write there
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = _run(version, clone)
    assert "Promoted model@v0.0.1 to prod" in proc.stdout
    dvc = subprocess.run([str(VENV / "bin" / "dvc"), "status"], cwd=clone, capture_output=True, text=True)
    assert "up to date" in dvc.stdout, dvc.stdout
    assert _git_status(clone) == "", "the recipe left changes the promotion did not commit"
