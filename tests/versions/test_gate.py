"""The gate: the candidate's own verdict judged against production (relative change, input schema)."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal.pipeline.evaluation import Check, verdict
from selfheal.versions.gate import input_schema, judge, schema_changes

PROD_V3 = {"version": "v3", "metric_name": "r2", "metric": 0.81, "md5": "0" * 32}


def judged(task: str, scores: dict[str, float], threshold: float, drop: float, production: dict[str, Any] | None,
           checks: list[Check] | tuple = (), features: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The validate stage's verdict, then the gate's, as heal and promote see it."""
    return judge(verdict(task, scores, threshold, checks), production, drop, features)


def test_no_production_passes_on_the_own_verdict_and_says_so() -> None:
    v = judged("regression", {"r2": 0.8123}, 0.70, 0.05, None)
    assert v["passed"] is True and v["passed_except_schema"] is True
    assert v["reasons"] == ["r2 0.812 meets threshold 0.700", "no production model to compare with"]
    assert v["production_version"] is None and v["production_metric"] is None


def test_a_failed_own_verdict_stays_failed() -> None:
    v = judged("regression", {"r2": 0.62}, 0.70, 0.05, PROD_V3)
    assert v["passed"] is False and v["passed_except_schema"] is False
    assert v["failures"][0] == "r2 0.620 below threshold 0.700"


def test_relative_drop_versus_production_fails_even_above_threshold() -> None:
    v = judged("regression", {"r2": 0.74}, 0.70, 0.05, PROD_V3)
    assert v["passed"] is False
    assert v["reasons"] == [
        "r2 0.740 meets threshold 0.700",
        "r2 0.740 dropped 8.6% versus production v3 (0.810), max 5%",
    ]
    assert v["production_version"] == "v3" and v["production_metric"] == 0.81
    assert v["relative_drop"] == pytest.approx(0.07 / 0.81)


@pytest.mark.parametrize(("metric", "change"), [(0.80, "dropped 1.2%"), (0.85, "improved 4.9%")])
def test_small_drop_or_improvement_versus_production_passes(metric: float, change: str) -> None:
    v = judged("regression", {"r2": metric}, 0.70, 0.05, PROD_V3)
    assert v["passed"] is True
    assert v["reasons"][1] == f"r2 {metric:.3f} {change} versus production v3 (0.810), max 5%"


def test_classification_gate_uses_accuracy() -> None:
    prod = {"version": "v1", "metric_name": "accuracy", "metric": 0.9}
    v = judged("classification", {"accuracy": 0.88, "f1": 0.5}, 0.7, 0.05, prod)
    assert v["passed"] is True and v["metric_name"] == "accuracy"
    assert v["reasons"][1] == "accuracy 0.880 dropped 2.2% versus production v1 (0.900), max 5%"


def test_production_scored_by_another_metric_is_not_compared() -> None:
    prod = {"version": "v1", "metric_name": "accuracy", "metric": 0.95}
    v = judged("regression", {"r2": 0.75}, 0.7, 0.05, prod)
    assert v["passed"] is True
    assert v["reasons"][1] == "production v1 has no recorded r2: no comparison"


FEATURES = [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "numeric"}, {"name": "c", "kind": "categorical",
                                                                                 "categories": ["x", "y"]}]


def test_schema_changes_name_each_difference() -> None:
    prod = {**PROD_V3, "features": input_schema(FEATURES)}
    assert "categories" not in prod["features"][2]  # categories may grow: not part of the schema
    assert schema_changes(FEATURES, prod) == []
    new = [{"name": "a", "kind": "categorical", "categories": ["1"]}, {"name": "bb", "kind": "numeric"}, FEATURES[2]]
    assert schema_changes(new, prod) == [
        "column 'a' was numeric, now categorical", "column(s) ['b'] no longer taken", "new column(s) ['bb']"]


def test_schema_change_fails_the_gate_but_says_the_model_is_otherwise_good() -> None:
    prod = {**PROD_V3, "features": input_schema(FEATURES)}
    new = [{**FEATURES[0], "kind": "categorical"}, *FEATURES[1:]]
    v = judged("regression", {"r2": 0.82}, 0.70, 0.05, prod, [], new)
    assert v["passed"] is False and v["passed_except_schema"] is True
    assert v["schema_changes"] == ["column 'a' was numeric, now categorical"]
    (failure,) = v["failures"]
    assert failure.startswith("input schema differs from production v3: column 'a' was numeric, now categorical")
    assert "--accept-schema-change" in failure
    same = judged("regression", {"r2": 0.82}, 0.70, 0.05, prod, [], FEATURES)
    assert same["passed"] is True and same["reasons"][-1] == "input columns and types match production v3"


def test_production_recorded_before_the_schema_is_not_compared() -> None:
    v = judged("regression", {"r2": 0.82}, 0.70, 0.05, PROD_V3, [], FEATURES)
    assert v["passed"] is True and v["schema_changes"] == []
    assert v["reasons"][-1] == "production v3 records no input schema: not compared"


def test_on_the_same_evaluation_data_no_drop_is_allowed_and_the_verdict_says_so() -> None:
    """Within the 5 % allowance, but worse on production's very holdout: refused; on new data: allowed."""
    worse = verdict("regression", {"r2": 0.80}, 0.70, [])
    same = judge(worse, PROD_V3, 0.05, None, shared="data/split/holdout.parquet")
    assert same["passed"] is False and same["max_relative_drop"] == 0.05
    assert same["failures"] == ["r2 0.800 dropped 1.2% versus production v3 (0.810), no drop allowed: same "
                                "evaluation data as production (data/split/holdout.parquet)"]
    assert judge(worse, PROD_V3, 0.05, None)["passed"] is True  # new data: the allowance applies
    equal = judge(verdict("regression", {"r2": 0.81}, 0.70, []), PROD_V3, 0.05, None, shared="holdout")
    assert equal["passed"] is True  # as good as production on the same data: no worse


def test_the_evaluation_data_is_the_evaluating_stages_deps_but_model_and_code() -> None:
    from selfheal.core.project import parse
    from selfheal.versions.gate import evaluation_data

    project = parse({"kind": "dvc", "model": {"artifact": "m", "outs": ["model.pkl"], "stages": ["train", "evaluate"]},
                     "gate": {"metrics": "eval/metrics.json", "key": "auc"}})
    lock = {"train": {"deps": [{"path": "data/features", "md5": "f.dir"}], "outs": [{"path": "model.pkl", "md5": "m"}]},
            "evaluate": {"deps": [{"path": "model.pkl", "md5": "m"}, {"path": "data/features", "md5": "f.dir"},
                                  {"path": "src/evaluate.py", "md5": "c"}],
                         "outs": [{"path": "eval/metrics.json", "md5": "e"}]}}
    assert evaluation_data(lock, project) == {"data/features": "f.dir"}
    assert evaluation_data({"train": lock["train"]}, project) == {}  # no stage writes the metrics: unknown
    lock["evaluate"]["outs"] = [{"path": "eval", "md5": "e.dir"}]  # the metrics file inside a directory output
    assert evaluation_data(lock, project) == {"data/features": "f.dir"}


@pytest.mark.slow
def test_the_gate_tells_the_same_holdout_from_new_data_in_a_real_repository(promoted, workdir) -> None:
    """New params on the same raw data: the same holdout as production, so no drop is allowed (and the verdict
    says so); new raw data: a new holdout, the configured allowance."""
    from selfheal.core.project import current
    from selfheal.versions.catalog import Versions
    from selfheal.versions.gate import judged
    from tests.heal_support import run, set_max_iter

    repo = workdir(promoted)
    set_max_iter(repo, 150)
    run(["dvc", "repro", "validate"], repo)
    same = judged(Versions(current(repo), repo))
    assert same is not None and "same evaluation data as production (data/split/holdout.parquet)" in same["reasons"][-2]
    import pandas as pd

    from selfheal.pipeline.synth import make_housing

    raw = repo / "data/raw/housing.csv"
    header = list(pd.read_csv(raw, nrows=0).columns)
    with open(raw, "a", encoding="utf-8") as fh:  # new rows: a new split, a new holdout
        fh.write(make_housing(300, seed=99)[header].to_csv(index=False, header=False))
    run(["dvc", "repro", "validate"], repo)
    new = judged(Versions(current(repo), repo))
    assert new is not None and "same evaluation data" not in " ".join(new["reasons"])
    assert any("versus production v0.0.1" in r and r.endswith("max 5%") for r in new["reasons"])
