"""The drill's outside judge on a real promoted project: it finds what is wrong and accepts what is right."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from selfheal.core.project import current
from selfheal.ops import judge
from selfheal.ops.drill_project import spec_of
from tests.heal_support import production_of


def test_a_promoted_project_is_good_and_each_fault_is_named(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    spec = spec_of(repo, current(repo))
    version, commit = judge.production(repo, spec) or ("", "")
    assert version == production_of(repo)["version"] and commit
    before = judge.snapshot(repo)
    assert judge.end_state(repo, spec, before, set()) == []

    model = repo / "models/model.joblib"
    good = model.read_bytes()
    model.write_bytes(good[:-10])
    assert any(p.startswith("models/model.joblib md5") for p in judge.end_state(repo, spec, before, set()))
    # after an escalation the workspace may hold a candidate while production's bytes are in the DVC cache
    assert judge.end_state(repo, spec, before, set(), escalated=True) == []
    model.write_bytes(good)

    (repo / "notes.txt").write_text("a file nobody should write")
    (repo / "monitoring").mkdir(exist_ok=True)
    (repo / "monitoring/heal_log.json").write_text("{not json")
    problems = judge.end_state(repo, spec, before, set())
    assert any("notes.txt" in p and "written outside" in p for p in problems)
    assert "monitoring/heal_log.json is not valid JSON" in problems
    assert not any("notes.txt" in p for p in judge.end_state(repo, spec, before, {"notes.txt"}))
    (repo / "monitoring/heal_log.json").write_text("[]")
    (repo / "metrics/drift.json").write_text('{"changed": 1}')  # an output of no version stage: allowed, unless strict
    assert judge.end_state(repo, spec, before, {"notes.txt"}) == []
    assert any("nothing was to change" in p for p in judge.end_state(repo, spec, before, {"notes.txt"},
                                                                       strict=True))


def test_data_heal_made_must_be_clean_and_consumed(promoted: Path, workdir) -> None:
    repo = workdir(promoted)
    clean, raw = repo / "data/clean/housing.parquet", repo / "data/raw/housing.csv"
    assert judge.data_problems(repo, clean, raw, "median_house_value", None, Path(".selfheal")) == []
    df = pd.read_parquet(clean)
    pd.concat([df, df.head(3)]).to_parquet(clean)
    raw.write_text(raw.read_text() + raw.read_text().splitlines()[1] + "\n")
    problems = judge.data_problems(repo, clean, raw, "median_house_value", None, Path(".selfheal"))
    assert problems == ["data/clean/housing.parquet has duplicate rows",
                        "dvc.lock's candidate was not made from the data/raw/housing.csv"]
