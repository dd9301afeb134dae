"""Drift-triggered retraining, for every project kind: the policy decides, then the batch comes in, a
candidate is built and the gate judges it.

How the current batch reaches the training data: in our pipeline selfheal folds it in (documented in the
README): its rows that carry the target are appended to data.raw, skipping rows the raw file already holds (so
folding the same batch twice adds nothing); in any other project retrain.command does it. Either way the watched
data, their .dvc files, dvc.lock and the git-tracked outputs are backed up first (.selfheal/backups); a better
model is promoted (its commit holds the data's .dvc files: `dvc repro` versioned the new data); otherwise
production is restored and the data and the stages that read it are put back, so the drift stays visible and a
failed retrain leaves the workspace as it found it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfheal.core import atomic, audit, journal, workspace
from selfheal.core.clock import now_iso
from selfheal.core.project import Project
from selfheal.healing.observe import batch_retrained, shaped
from selfheal.healing.policy import Observations, RetrainDecision, Settings, retrain_verdict
from selfheal.versions import vcs
from selfheal.versions.catalog import Versions
from selfheal.versions.checkout import from_backup, restore_stages

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def _record(log: Path, entry: dict[str, Any], completed: bool) -> None:
    """Append `entry` to the history; only a completed attempt (its model promoted or rolled back) starts the
    cooldown, so a failed or empty one never blocks the next retrain."""
    def change(data: Any) -> dict[str, Any]:
        data = shaped(data)
        last = entry["started_at"] if completed else data.get("last_retrain_time")
        return {**data, "last_retrain_time": last, "history": [*data.get("history", []), entry]}

    audit.update(log, change, default={})


def _known_rows(new: pd.DataFrame, old: pd.DataFrame, numeric: list[str]) -> np.ndarray:
    """Which rows of `new` `old` already holds, by value: equal categories and numbers equal to 1e-9 (relative),
    so 41, 41.0 and a float written with 12 digits are one value. A hash of each number's top 20 mantissa bits
    (about 6 digits) finds the candidate row, the full values confirm it. A binary grid, because a decimal one
    splits the data's own rounded values (1.2582895 next to 1.25828949999) into neighbouring cells."""
    import numpy as np
    import pandas as pd

    def keys(frame: pd.DataFrame) -> pd.Index:
        coarse = frame.copy()
        for col in numeric:
            coarse[col] = coarse[col].to_numpy(dtype="float64").view(np.int64) >> 32
        return pd.Index(pd.util.hash_pandas_object(coarse, index=False))

    old_keys = keys(old)
    first = pd.Series(np.arange(len(old)), index=old_keys)
    first = first[~old_keys.duplicated()]
    pos = first.reindex(keys(new)).to_numpy()
    found = ~np.isnan(pos)
    if found.any() and numeric:
        a = new.loc[found, numeric].to_numpy(dtype="float64")
        b = old[numeric].to_numpy(dtype="float64")[pos[found].astype(int)]
        found[found] = np.isclose(a, b, rtol=1e-9, atol=0, equal_nan=True).all(axis=1)
    return found


def fold_current(raw: Path, current: Path, target: str, columns: Mapping[str, str] | None = None) -> int:
    """Append the current batch's labelled rows that raw lacks to `raw` (atomically); returns rows added.

    Rows are compared by value as fix_data reads them (numbers parsed, padding and placeholders normalised), so a
    raw file rewritten by `selfheal fix-data` (41 -> 41.0) does not get the batch's copies of its rows again.
    """
    from selfheal.core.errors import DataError
    from selfheal.pipeline.checks import infer_schema, read_csv_checked, typed

    old, new = read_csv_checked(raw), read_csv_checked(current)
    if target not in new.columns:
        raise DataError(f"{current}: no target column {target!r}; a batch without labels cannot be trained on")
    missing = [c for c in old.columns if c not in new.columns]
    if missing:
        raise DataError(f"{current}: column(s) {missing} of {raw} missing; cannot fold the batch into training data")
    new = new[list(old.columns)]
    schema = infer_schema(old, target, overrides=dict(columns or {}))
    numeric = [c for c, kind in schema.columns.items() if kind == "numeric"]
    (old_typed, _), (new_typed, _) = typed(old, schema), typed(new, schema)
    fresh = new_typed[target].notna().to_numpy() & ~_known_rows(new_typed, old_typed, numeric)
    fresh &= ~new_typed.round({c: 9 for c in numeric}).duplicated().to_numpy()
    rows = new[fresh]
    if rows.empty:
        return 0
    head = raw.read_bytes()
    tail = rows.to_csv(index=False, header=False, lineterminator="\n").encode()
    atomic.write_bytes(raw, head + (b"" if head.endswith(b"\n") else b"\n") + tail)
    return len(rows)


def _flagged(detected: bool, score: float | None, threshold: float) -> dict[str, Any]:
    """The guide's --drift-detected / --drift-score as a measurement: a score is judged by the drift rule (the
    one rule), a bare --drift-detected is the caller's verdict."""
    if score is not None:
        from selfheal.pipeline.profile_drift import dataset_drift

        return {"drift_detected": dataset_drift(score, threshold), "drift_score": float(score), "threshold": threshold}
    return {"drift_detected": detected, "drift_score": 1.0, "threshold": threshold}


def _due(obs: Observations, rules: Settings, force: bool) -> RetrainDecision:
    """The policy's retrain decision; a project that measures no drift retrains on schedule: the cooldown alone."""
    if obs.drift is not None:
        return retrain_verdict(obs, rules, force)
    if force or obs.last_retrain is None or obs.now - obs.last_retrain >= timedelta(hours=rules.cooldown_hours):
        return RetrainDecision(True, "scheduled retrain (no drift section: the cooldown alone decides)")
    return RetrainDecision(False, f"within the {rules.cooldown_hours:g} h cooldown since {obs.last_retrain.isoformat()}; "
                                  "skipped (--force to override)")


def retrain(project: Project, *, drift_detected: bool = False,
            drift_score: float | None = None, force: bool = False, cwd: Path = Path(".")) -> dict[str, Any] | None:
    """Decide, and when the decision is to retrain: bring the new batch in, build, then promote or roll back.

    The batch comes in by selfheal's fold for our pipeline (Project.params), by retrain.command for any other project
    (the repro section without one). Unless the new model is promoted, the watched data, their .dvc files and the
    stages that read them are put back as they were, so a failed retrain leaves the workspace as it found it.
    Returns the retraining-log entry, or None when no retrain was due. Only a completed attempt (promoted or
    rolled back) starts the cooldown; an attempt that folds nothing new into data the pipeline already trained on
    does nothing and says so.
    """
    from dataclasses import replace

    from selfheal.core import backups
    from selfheal.core.errors import SelfHealError
    from selfheal.healing.observe import drift_observations, settings, watched

    rules = settings(project)
    obs = drift_observations(project, cwd)
    if drift_score is not None or drift_detected:
        obs = replace(obs, drift=_flagged(drift_detected, drift_score, rules.drift_threshold), drift_error=None,
                      batch_retrained=None)
    if obs.drift_error:
        raise SelfHealError(obs.drift_error)
    if obs.drift is None and obs.monitor_stage:
        raise SelfHealError(f"{obs.drift_path}: not found; run `dvc repro` (monitor) or pass --drift-detected "
                            "--drift-score")
    verdict = _due(obs, rules, force)
    score = float((obs.drift or {}).get("drift_score") or 0.0)
    if (obs.drift or {}).get("drift_detected"):
        print(f"🚨 Data drift detected! Score: {score:.2f}")
    print(("✅ " if verdict.retrain else "ℹ️  ") + verdict.reason)
    if not verdict.retrain:
        return None
    log = cwd / project.record(workspace.RETRAINING_LOG)
    started, t0 = now_iso(), time.perf_counter()
    current = cwd / rules.current
    data = [cwd / p for p in watched(project)]
    put_back: list[str | Path] = [*data, *(p.with_name(f"{p.name}.dvc") for p in data)]  # unless promoted
    saved = [*put_back, cwd / workspace.DVC_LOCK,
             *(cwd / p for paths in vcs.git_tracked_outputs(cwd / workspace.DVC_YAML).values() for p in paths)]
    backup_dir = backups.backup(saved, "retrain")
    before = vcs.read_lock(cwd / workspace.DVC_LOCK)
    action = "forced_retrain" if force else "auto_retrain"
    entry: dict[str, Any] = {
        **audit.entry(action, verdict.reason, False), "outcome": "failed", "drift_score": score,
        "drift_detected_at": started, "started_at": started, "duration_s": None, "rows_added": 0,
        "current_md5": atomic.md5_file(current) if current.is_file() else None, "version": None, "metric": None,
        "metric_name": None,
    }
    undo = {"backup": str(backup_dir), "paths": [str(p) for p in put_back]}  # if killed: the next heal puts back
    with journal.intent(action, log, verdict.reason, data_path=", ".join(map(str, data)), undo=undo):
        try:
            entry |= _bring_in_and_build(project, verdict.reason, cwd)
            if entry["outcome"] != "nothing_new":
                batch = {str(rules.current): entry["current_md5"]} if entry["current_md5"] else None
                entry |= _gate(project, cwd, entry.pop("refused", None), batch)
        except SelfHealError as exc:
            entry["error"] = str(exc)
            print(f"❌ Retraining failed: {exc}", file=sys.stderr)
        finally:  # unless promoted: the data and the stages reading it as before (the model: rolled back)
            if entry["outcome"] not in ("promoted", "nothing_new"):
                backups.restore_backup(backup_dir, put_back)
                restore_stages(before, [s for s in before if s not in project.model.stages], from_backup(backup_dir),
                               cwd)
        versions = Versions(project, cwd)
        prod = versions.production()
        entry |= {"timestamp": now_iso(), "success": entry["outcome"] == "promoted",
                  "duration_s": round(time.perf_counter() - t0, 1), "backup": str(backup_dir),
                  "production": prod.name if prod else None}
        _record(log, entry, completed=entry["outcome"] in ("promoted", "rolled_back"))
    if entry["success"]:
        print("✅ Retraining completed successfully")
    elif entry["outcome"] != "nothing_new":
        print(f"⚠️  Retraining did not produce a better model ({entry['outcome']}); production is "
              f"{entry['production']}" + ("" if entry["outcome"] == "rolled_back" else
                                          "; the cooldown was not started, so the next retrain may try again"))
    return entry


def _bring_in_and_build(project: Project, reason: str, cwd: Path) -> dict[str, Any]:
    """Fold the batch in (our pipeline) and build; or run retrain.command. Raises when the build failed."""
    from selfheal.core.errors import SelfHealError
    from selfheal.healing.actions import build

    out: dict[str, Any] = {}
    if (params := project.params) is not None:
        out["rows_added"] = added = fold_current(cwd / params.data.raw, cwd / params.data.current, params.data.target,
                                                 params.data.columns)
        if added == 0 and _trained_as_is(cwd):
            persisting = batch_retrained(cwd / params.data.current, cwd / project.record(workspace.RETRAINING_LOG))
            print(f"ℹ️  Nothing new to train on: every labelled row of {params.data.current} is already in "
                  f"{params.data.raw}, and the model was trained on exactly this data and params, so "
                  f"retraining would only repeat it. {persisting or 'A new batch in data.current is measured afresh.'}")
            return out | {"outcome": "nothing_new"}
        atomic.pause_at("retrain:folded")
        print(f"🔄 Starting model retraining... ({added} rows of {params.data.current} folded into {params.data.raw})")
    ok, note = build(project, cwd, reason, command=project.retrain.command)
    if ok and project.retrain.command and (stale := _stale(cwd, project.model.stages)):
        # a command that only folds the batch in: the candidate is what the pipeline makes of the new data
        print(f"ℹ️  retrain.command left {', '.join(stale)} out of date with its inputs: reproducing the pipeline")
        ok, note = build(project, cwd, reason)
    if not ok and not (cwd / project.record(workspace.FAILED_CANDIDATE)).exists():
        return out | {"refused": note}  # built, but on data still invalid: never promoted
    if not ok:
        raise SelfHealError(note)  # production was restored after the failed build
    return out


def _gate(project: Project, cwd: Path, refused: str | None, batch: dict[str, str] | None) -> dict[str, Any]:
    """The policy's verdict on the new candidate, carried out: promoted (its record names the `batch` it was
    trained on), left as production, or (anything else, or `refused`) production restored."""
    from selfheal.core.errors import SelfHealError
    from selfheal.healing.actions import execute, reloader
    from selfheal.healing.observe import observe, settings
    from selfheal.healing.policy import Decision, plan
    from selfheal.versions.promote import promote

    obs = observe(project, cwd)
    verdict = obs.verdict or {}
    out = {"metric": verdict.get("metric"), "metric_name": verdict.get("metric_name")}
    decision = next(d for d in plan(obs, settings(project)) if d.step == "model")
    if refused is None and decision.action == "ok":
        return out | {"outcome": "unchanged", "version": (obs.production or {}).get("version")}
    if refused is None and decision.action == "promote":
        promote(project, reason=decision.reason, reload=reloader(project), cwd=cwd, trained_on=batch)
        production = Versions(project, cwd).production()
        return out | {"outcome": "promoted", "version": production.name if production else None}
    reason = refused or decision.reason
    if obs.production is None:
        raise SelfHealError(f"{reason}; no production version to restore")
    result = execute(Decision("model", "rollback", reason), project, cwd)
    if not result.ok:
        raise SelfHealError(result.note)
    return out | {"outcome": "rolled_back", "version": result.note, "note": reason}


def _trained_as_is(cwd: Path) -> bool:
    """The model is up to date with the data, params and code (`dvc status train` has nothing to say)."""
    return _stale(cwd, ["train"]) == []


def _stale(cwd: Path, stages: list[str]) -> list[str] | None:
    """The stages `dvc status` finds out of date (these and those upstream of them); None when it cannot tell."""
    import json

    proc = vcs.dvc("status", "--json", "--with-deps", *stages, cwd=cwd, check=False)
    try:
        return sorted(json.loads(proc.stdout or "{}")) if proc.returncode == 0 else None
    except ValueError:
        return None
