"""`make exp`: a grid of params queued as DVC experiments, run in temporary clones, listed best first."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from selfheal.core.errors import ConfigError
from selfheal.ops.experiments import load_grid, set_param_args
from selfheal.ops.sandbox import run

ROOT = Path(__file__).resolve().parents[2]
# the Makefile of this checkout, with the venv running the tests (STAMP= : never (re)build a venv here)
MAKE = ["make", "-f", str(ROOT / "Makefile"), "STAMP=", f"VENV={Path(sys.executable).parent.parent}"]


def _grid(repo: Path, *grids: dict) -> None:
    (repo / "config" / "exp_grid.yaml").write_text(yaml.safe_dump({"grids": list(grids)}, sort_keys=False))


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_make_exp_runs_a_two_point_grid_lists_it_best_first_and_applies_one(project: Path) -> None:
    # the baseline's params (a run-cache hit) and a linear model (a real run in a temporary clone)
    _grid(project, {"train.model": ["hist_gradient_boosting", "linear"]})
    proc = run([*MAKE, "exp"], project)
    names = re.search(r"experiments of this grid: (\S+), (\S+)", proc.stdout)
    assert names, proc.stdout
    header, _, *rows = _rows(proc.stdout[names.end():])
    assert header[0] == "Experiment" and {"metric", "passed", "train.model"} <= set(header), header
    model, metric = header.index("train.model"), header.index("metric")
    exps = {next(n for n in names.groups() if f"[{n}]" in row[0]): row for row in rows if "[" in row[0]}
    assert sorted(exps) == sorted(names.groups())  # both ran (a failed one would have failed `make exp`)
    by_model = {row[model]: name for name, row in exps.items()}
    assert set(by_model) == {"hist_gradient_boosting", "linear"}
    order = [row[model] for row in rows if "[" in row[0]]
    assert order == ["hist_gradient_boosting", "linear"]  # sorted by the validation metric, best first
    assert float(exps[by_model["hist_gradient_boosting"]][metric]) > float(exps[by_model["linear"]][metric])

    best = run([*MAKE, "exp-apply"], project)  # no EXP: the best by the validation metric
    assert f"applied experiment {by_model['hist_gradient_boosting']}" in best.stdout
    run([*MAKE, "exp-apply", f"EXP={by_model['linear']}"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["model"] == "linear"
    validation = yaml.safe_load((project / "metrics/validation.json").read_text())
    assert validation["metric"] == pytest.approx(float(exps[by_model["linear"]][metric]), abs=1e-4)


def test_the_shipped_grid_is_valid_and_small() -> None:
    points = load_grid(ROOT / "config/exp_grid.yaml", ROOT / "params.yaml")
    assert 2 <= len(points) <= 8
    assert all(key.startswith("train.") for point in points for key in point)
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)  # no point twice


def test_grid_is_a_union_of_products(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "grids": [
                    {"train.model": ["hist_gradient_boosting"], "train.hist_gradient_boosting.learning_rate": [0.05, 0.1]},
                    {"train.model": "linear"},
                ]
            },
            sort_keys=False,
        )
    )
    points = load_grid(grid, ROOT / "params.yaml")
    assert points == [
        {"train.model": "hist_gradient_boosting", "train.hist_gradient_boosting.learning_rate": 0.05},
        {"train.model": "hist_gradient_boosting", "train.hist_gradient_boosting.learning_rate": 0.1},
        {"train.model": "linear"},
    ]
    assert set_param_args(points[0]) == [
        "-S", "train.model=hist_gradient_boosting", "-S", "train.hist_gradient_boosting.learning_rate=0.05",
    ]


@pytest.mark.parametrize(
    ("grids", "message"),
    [
        ([{"train.modle": ["linear"]}], "train.modle: unknown key"),
        ([{"train.model": ["xgboost"]}], "train.model: Input should be"),
        ([{"train.test_size": [2]}], "train.test_size: Input should be less than 1"),
        ([{"nogroup.x": [1]}], "nogroup.x: 'nogroup' is not a params group"),
        ([], "expected `grids:`"),
    ],
)
def test_a_bad_grid_fails_before_anything_is_queued(tmp_path: Path, grids: list, message: str) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grids": grids}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_grid(grid, ROOT / "params.yaml")
