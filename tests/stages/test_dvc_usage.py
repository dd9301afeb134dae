"""DVC as its users run it: the README's commands as written, readable metrics, a clean `git status` after a
rerun, the model artifact, `make clean`, `make exp-apply`, and the raw data under DVC. Real DVC in sandboxes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from selfheal.core import workspace
from selfheal.core.atomic import md5_file
from selfheal.core.config import load_params
from selfheal.pipeline.synth import write_default_data
from tests.conftest import ROOT, run
from tests.doc_blocks import block_with, dvc_blocks, run_block
from tests.heal_support import production_of

pytestmark = pytest.mark.slow

MAX_COLUMNS = 20  # a `dvc exp show --md` table that fits a pull-request comment


def _md_columns(text: str) -> int:
    header = next(line for line in text.splitlines() if line.startswith("| Experiment"))
    return header.count("|") - 1


def test_every_readme_dvc_block_activates_the_venv_first() -> None:
    """Stages call `python`: without activation `dvc exp run` picks another interpreter and fails."""
    blocks = dvc_blocks()
    assert len(blocks) == 4, blocks  # compare runs, artifacts, remote, your own data: each has its own test
    for block in blocks:
        assert block.splitlines()[0].startswith("source .venv/bin/activate"), block
        assert not re.search(r"\.venv/bin/dvc", block), block


@pytest.mark.timeout(900)  # an experiment, then four more dvc commands: minutes on a loaded 2-core machine
def test_readme_compare_commands_run_as_written_and_fit_a_pr_comment(project: Path) -> None:
    proc = run_block(block_with("dvc exp run"), project, SELFHEAL_MLFLOW="0")  # MLflow has its own tests
    assert "Running stage 'train'" in proc.stdout and "No module named" not in proc.stderr
    assert (project / "dvc_plots/index.html").is_file()
    table = proc.stdout[proc.stdout.index("| Experiment"):]
    assert "random_forest" in table and _md_columns(table) <= MAX_COLUMNS, table.splitlines()[0]


def test_declared_metrics_are_flat_numeric_and_few(built_project: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], built_project).stdout)
    files = shown[""]["data"] if "" in shown else next(iter(shown.values()))["data"]
    assert set(files) == {str(p) for p in workspace.METRICS}
    values = {f"{path}:{k}": v for path, entry in files.items() for k, v in entry["data"].items()}
    assert all(isinstance(v, (int, float)) for v in values.values()), values  # no strings, no nesting
    assert len(values) <= 20, sorted(values)
    assert {f"{workspace.VALIDATION_METRICS}:r2", f"{workspace.DRIFT_METRICS}:drift_score",
            f"{workspace.DATA_QUALITY_METRICS}:problems_after"} <= set(values)


def test_a_forced_rerun_writes_the_same_tracked_bytes(project: Path) -> None:
    """A fresh `make run` leaves git clean: no timings, run ids, timestamps or float jitter in tracked files."""
    shutil.rmtree(project / ".dvc/cache/runs", ignore_errors=True)
    for store in ("mlflow.db", "mlartifacts"):
        shutil.rmtree(project / store, ignore_errors=True) if (project / store).is_dir() else (project / store).unlink(missing_ok=True)
    run(["dvc", "repro", "--force"], project)
    assert run(["git", "status", "--porcelain"], project).stdout == ""
    tracked = run(["git", "ls-files", "metrics", "models", "dvc.lock"], project).stdout.split()
    text = "\n".join((project / p).read_text() for p in tracked)
    assert not re.search(r"fit_seconds|mlflow_run_id|trained_at", text)


def test_committed_data_versions_match_what_make_data_writes(tmp_path: Path, monkeypatch) -> None:
    """A fresh clone: `make data` writes the default data with the bytes the committed .dvc files pin."""
    monkeypatch.chdir(tmp_path)
    data = load_params(ROOT / workspace.PARAMS).data
    write_default_data(load_params(ROOT / workspace.PARAMS))
    for rel in (data.raw, data.current):
        pinned = yaml.safe_load((ROOT / f"{rel}.dvc").read_text())["outs"][0]["md5"]
        assert md5_file(rel) == pinned, rel


def test_built_project_versions_its_data_with_dvc(built_project: Path) -> None:
    for rel in ("data/raw/housing.csv.dvc", "data/current/housing.csv.dvc"):
        assert run(["git", "ls-files", "--error-unmatch", rel], built_project).returncode == 0
        md5 = yaml.safe_load((built_project / rel).read_text())["outs"][0]["md5"]
        assert (built_project / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file(), rel
    assert json.loads(run(["dvc", "status", "--json"], built_project).stdout) == {}


def test_readme_artifacts_get_fetches_production_from_the_remote(promoted: Path, tmp_path: Path) -> None:
    repo = tmp_path / "project"
    shutil.copytree(promoted, repo, symlinks=True)
    production = production_of(repo)
    shutil.rmtree(repo / ".dvc/cache")  # only the remote has the bytes
    run_block(block_with("dvc artifacts get"), repo)
    assert md5_file(repo / "prod_model.joblib") == production["md5"]


def test_make_clean_deletes_no_tracked_file(project: Path) -> None:
    shutil.copy2(ROOT / "Makefile", project / "Makefile")
    run(["git", "add", "Makefile"], project)
    (project / "dvc_plots").mkdir()
    run(["make", "clean"], project)
    assert run(["git", "status", "--porcelain"], project).stdout.strip() == "A  Makefile"
    for rel in (workspace.MODEL, workspace.MODEL_META, workspace.REFERENCE, workspace.HOLDOUT, "dvc_plots"):
        assert not (project / rel).exists(), rel
    assert (project / workspace.TRAIN_METRICS).is_file()  # tracked, like its peers: kept
    run(["dvc", "checkout"], project)
    assert json.loads(run(["dvc", "status", "--json"], project).stdout) == {}


def test_dvc_plots_output_is_gitignored(project: Path) -> None:
    assert run(["git", "check-ignore", "-q", "dvc_plots/index.html"], project, check=False).returncode == 0


def test_exp_apply_changes_only_the_experiments_params(project: Path) -> None:
    params = project / workspace.PARAMS
    params.write_text(params.read_text().replace("target: MedHouseVal", 'target: "MedHouseVal"'))
    run(["git", "commit", "-qam", "a quoted value, as people write it"], project)
    run(["dvc", "exp", "run", "-n", "lin", "-S", "train.model=linear"], project)
    assert 'target: "MedHouseVal"' not in params.read_text()  # DVC rewrites the file its own way
    run(["git", "checkout", "--", "."], project)
    run(["dvc", "checkout", "--force"], project)
    mine = params.read_text().replace("current_rows: 5000", "current_rows: 5001")  # a workspace edit
    params.write_text(mine)
    run(["selfheal", "exp-apply", "lin"], project)
    expected = mine.replace("model: hist_gradient_boosting", "model: linear", 1)
    assert params.read_text() == expected
