"""The drift of a project's configured batch (selfheal.yaml `drift:`): drift.current against drift.reference, per
column with the test Evidently picks, from mergeable profiles (the engine of our monitor stage), and the dataset
verdict of its rule. Reused while both files, the threshold and the columns are unchanged, so a heal on a
healthy project does not read them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, clock, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project


def _frame(project: Project, name: str, cwd: Path) -> Any:
    from selfheal.pipeline.checks import read_csv_checked, read_parquet_checked

    path = cwd / name
    if not path.is_file():
        raise SelfHealError(f"selfheal.yaml: drift: {name}: file not found")
    return read_parquet_checked(path, "selfheal.yaml drift names it") if name.endswith(".parquet") \
        else read_csv_checked(path)


def measure_drift(project: Project, cwd: Path = Path("."), remember: bool = True) -> dict[str, Any]:
    """The drift of drift.current against drift.reference, per column with the test Evidently picks (the
    profile drift of our monitor), and the dataset verdict of its rule; reused while both files are unchanged."""
    d = project.drift
    assert d is not None
    record = cwd / project.record(workspace.DRIFT_CHECKED)
    inputs = {"reference": atomic.md5_file(cwd / d.reference) if (cwd / d.reference).is_file() else None,
              "current": atomic.md5_file(cwd / d.current) if (cwd / d.current).is_file() else None,
              "threshold": d.drift_threshold, "columns": d.columns, "target": project.data and project.data.target}
    last = audit.read(record, {})
    if isinstance(last, dict) and last.get("inputs") == inputs:
        return last
    from selfheal.pipeline import profile_drift, profiles
    from selfheal.pipeline.checks import infer_schema, typed
    from selfheal.pipeline.profile_drift import dataset_drift

    ref, cur = _frame(project, d.reference, cwd), _frame(project, d.current, cwd)
    target = project.data.target if project.data else None
    shared = [c for c in ref.columns if c in cur.columns and c != target]
    columns = d.columns or shared
    unknown = [c for c in columns if c not in shared]
    if unknown:
        raise SelfHealError(f"selfheal.yaml: drift.columns: {unknown} not in both {d.reference} and {d.current} "
                            f"(shared: {shared})")
    schema = infer_schema(ref[columns], columns[0])
    schema.target = ""  # every compared column is a feature
    kinds = {c: schema.columns[c] for c in columns}
    ref_t, cur_t = typed(ref[columns], schema)[0], typed(cur[columns], schema)[0]
    per_column = profile_drift.drift(profiles.profile_frame(ref_t, kinds), profiles.profile_frame(cur_t, kinds),
                                     columns)
    count = sum(1 for c in per_column.values() if c["drifted"])
    share = count / len(columns)
    measured = {"timestamp": clock.now_iso(), "inputs": inputs, "reference": d.reference, "current": d.current,
                "drift_detected": dataset_drift(share, d.drift_threshold), "drift_score": share,
                "share_of_drifted_columns": share, "number_of_drifted_columns": count,
                "number_of_columns": len(columns), "threshold": d.drift_threshold, "columns": per_column}
    if remember:
        atomic.write_json(record, measured)
    return measured
