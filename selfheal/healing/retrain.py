"""Drift-triggered retraining: a pure cooldown decision, and the retrain itself.

How the current batch reaches the training data (documented in the README): its rows that carry the target are
appended to data.raw, skipping rows the raw file already holds (so folding the same batch twice adds nothing),
after a backup in .selfheal/backups. Then `dvc repro` fixes, trains and validates, and the model gate decides:
a better model is promoted (its commit holds the raw data's .dvc file: `dvc repro` versioned the folded data);
a worse one is rolled back to production and the fold is undone (raw data and its .dvc file, the
fix_data and monitor stages and their outputs restored, so the drift stays visible), so a failed retrain leaves
the workspace as it found it.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfheal.core import audit, journal, workspace
from selfheal.core.clock import now_iso, parse_time
from selfheal.healing.policy import retrain_decision
from selfheal.versions import registry, vcs

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


def read_log(log: Path = workspace.RETRAINING_LOG) -> dict[str, Any]:
    """The retraining log: {"last_retrain_time": ..., "history": [...]} (the guide's shape)."""
    data = audit.read(log, {})
    return data if isinstance(data, dict) else {"last_retrain_time": None, "history": list(data)}


def last_retrain_time(log: Path = workspace.RETRAINING_LOG) -> datetime | None:
    value = read_log(log).get("last_retrain_time")
    return parse_time(value) if value else None


def _record(log: Path, entry: dict[str, Any], completed: bool) -> None:
    """Append `entry` to the history; only a completed attempt (its model promoted or rolled back) starts the
    cooldown, so a failed or empty one never blocks the next retrain."""
    def change(data: Any) -> dict[str, Any]:
        data = data if isinstance(data, dict) else {"history": list(data or [])}
        last = entry["started_at"] if completed else data.get("last_retrain_time")
        return {**data, "last_retrain_time": last, "history": [*data.get("history", []), entry]}

    audit.update(log, change, default={})


def batch_trained_by(current: Path, log: Path = workspace.RETRAINING_LOG) -> str | None:
    """The version a completed retrain trained on exactly this batch (same md5), or None. Retraining on it
    again would fold nothing new."""
    from selfheal.core import atomic

    if not current.is_file():
        return None
    md5 = atomic.md5_file(current)
    for entry in reversed(read_log(log).get("history") or []):
        if entry.get("current_md5") == md5 and entry.get("outcome") == "promoted":
            return str(entry.get("version"))
    return None


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


def fold_current(raw: Path, current: Path, target: str, columns: dict[str, str] | None = None) -> int:
    """Append the current batch's labelled rows that raw lacks to `raw` (atomically); returns rows added.

    Rows are compared by value as fix_data reads them (numbers parsed, padding and placeholders normalised), so a
    raw file rewritten by `selfheal fix-data` (41 -> 41.0) does not get the batch's copies of its rows again.
    """
    from selfheal.core import atomic
    from selfheal.core.errors import DataError
    from selfheal.pipeline.checks import infer_schema, read_csv_checked, typed

    old, new = read_csv_checked(raw), read_csv_checked(current)
    if target not in new.columns:
        raise DataError(f"{current}: no target column {target!r}; a batch without labels cannot be trained on")
    missing = [c for c in old.columns if c not in new.columns]
    if missing:
        raise DataError(f"{current}: column(s) {missing} of {raw} missing; cannot fold the batch into training data")
    new = new[list(old.columns)]
    schema = infer_schema(old, target, overrides=columns)
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


def _drift_input(drift_detected: bool, drift_score: float | None, threshold: float, drift_file: Path
                 ) -> tuple[bool, float, float, str]:
    """(detected, score, threshold, detected_at): the guide's flags when given, else the monitor's verdict in
    metrics/records/drift.json (with the threshold it applied, and the file's write time). Never re-judged here."""
    from selfheal.core import atomic
    from selfheal.core.errors import SelfHealError

    if drift_score is not None:  # the guide's --drift-score: judged by the monitor's own rule, the one rule
        from selfheal.pipeline.profile_drift import dataset_drift

        return dataset_drift(drift_score, threshold), float(drift_score), threshold, now_iso()
    if drift_detected:  # the guide's --drift-detected alone: the caller's verdict
        return True, 1.0, threshold, now_iso()
    drift = atomic.read_json(drift_file)
    if not isinstance(drift, dict):
        raise SelfHealError(f"{drift_file}: not found; run `dvc repro` (monitor) or pass --drift-detected --drift-score")
    when = datetime.fromtimestamp(drift_file.stat().st_mtime, UTC).replace(microsecond=0).isoformat()
    measured = float(drift.get("threshold", threshold))
    return bool(drift.get("drift_detected")), float(drift.get("drift_score") or 0.0), measured, when


def retrain(params: Any, *, drift_detected: bool = False, drift_score: float | None = None,
            force: bool = False, service_url: str | None = None, cwd: Path = Path(".")) -> dict[str, Any] | None:
    """Decide, and when the decision is to retrain: fold, `dvc repro`, then promote or roll back + undo.

    Returns the retraining-log entry, or None when no retrain was due. Never leaves a worse model in production.
    Only a completed attempt (promoted or rolled back) starts the cooldown; an attempt that folds nothing new
    into data the pipeline already trained on does nothing and says so.
    """
    from selfheal.core import atomic
    from selfheal.core.errors import SelfHealError
    from selfheal.healing import guard

    dd, log = params.drift_detection, cwd / workspace.RETRAINING_LOG
    detected, score, threshold, detected_at = _drift_input(drift_detected, drift_score, dd.drift_threshold,
                                                           cwd / workspace.DRIFT)
    verdict = retrain_decision(drift_detected=detected, drift_score=score, threshold=threshold,
                               last_retrain=last_retrain_time(log), now=datetime.now(UTC),
                               cooldown_hours=dd.retraining_cooldown_hours, enabled=dd.auto_retrain_enabled,
                               force=force)
    if detected:
        print(f"🚨 Data drift detected! Score: {score:.2f}")
    print(("✅ " if verdict.retrain else "ℹ️  ") + verdict.reason)
    if not verdict.retrain:
        return None
    started, t0 = now_iso(), time.perf_counter()
    raw, current = cwd / params.data.raw, cwd / params.data.current
    raw_dvc = raw.with_name(f"{raw.name}.dvc")  # `dvc repro` versions the folded data in it
    tracked = [p for paths in vcs.git_tracked_outputs(cwd / workspace.DVC_YAML).values() for p in paths]
    backup_dir = guard.backup([raw, raw_dvc, cwd / workspace.DVC_LOCK, *(cwd / p for p in tracked)], "retrain")
    before = vcs.read_lock(cwd / workspace.DVC_LOCK)
    action = "forced_retrain" if force else "auto_retrain"
    entry: dict[str, Any] = {
        **audit.entry(action, verdict.reason, False), "outcome": "failed", "drift_score": score, "drift_detected_at": detected_at,
        "started_at": started, "duration_s": None, "rows_added": 0, "current_md5": atomic.md5_file(current)
        if current.is_file() else None, "version": None, "metric": None, "metric_name": None,
    }
    with journal.intent(action, cwd / workspace.HEAL_LOG, verdict.reason, data_path=params.data.raw):
        try:
            entry["rows_added"] = added = fold_current(raw, current, params.data.target, params.data.columns)
            if added == 0 and _trained_as_is(cwd):
                entry["outcome"] = "nothing_new"
                print(f"ℹ️  Nothing new to train on: every labelled row of {params.data.current} is already in "
                      f"{params.data.raw}, and the model was trained on exactly this data and params, so "
                      "retraining would only repeat it. " + _persisting(batch_trained_by(current, log)))
            else:
                print(f"🔄 Starting model retraining... ({added} rows of {params.data.current} folded into "
                      f"{params.data.raw})")
                entry |= _repro_and_gate(verdict.reason, before, backup_dir, raw, service_url, cwd)
        except SelfHealError as exc:
            entry["error"] = str(exc)
            print(f"❌ Retraining failed: {exc}", file=sys.stderr)
        entry |= {"timestamp": now_iso(), "success": entry["outcome"] == "promoted",
                  "duration_s": round(time.perf_counter() - t0, 1), "backup": str(backup_dir),
                  "production": getattr(registry.production(cwd), "name", None)}
        _record(log, entry, completed=entry["outcome"] in ("promoted", "rolled_back"))
        if entry["success"]:
            print("✅ Retraining completed successfully")
        elif entry["outcome"] != "nothing_new":
            print(f"⚠️  Retraining did not produce a better model ({entry['outcome']}); production is "
                  f"{entry['production']}" + ("" if entry["outcome"] == "rolled_back" else
                                              "; the cooldown was not started, so the next retrain may try again"))
        return entry


def _trained_as_is(cwd: Path) -> bool:
    """The model is up to date with the data, params and code (`dvc status train` has nothing to say)."""
    import json

    proc = vcs.dvc("status", "--json", "train", cwd=cwd, check=False)
    try:
        return proc.returncode == 0 and json.loads(proc.stdout or "{}") == {}
    except ValueError:
        return False


def _persisting(version: str | None) -> str:
    """Why drift can persist after a retrain on the drifted batch, instead of retraining again."""
    if version is None:
        return "A new batch in data.current is measured afresh."
    return (f"The drift persists after {version} was trained on this batch: the drift reference is now a sample "
            "of the old training data and this batch together, so the batch still differs from most of it. "
            "A new batch is measured afresh; a person decides whether this batch is the new normal.")


def _repro_and_gate(reason: str, before: dict[str, Any], backup_dir: Path, raw: Path, service_url: str | None,
                    cwd: Path) -> dict[str, Any]:
    """`dvc repro`, then promote a passing model on valid data, else roll back to production and undo the fold.
    Returns the entry's outcome fields; raises SelfHealError (after undoing what it can) when that fails."""
    from selfheal.core.errors import SelfHealError
    from selfheal.core.project import current
    from selfheal.healing import guard
    from selfheal.service.client import reloader
    from selfheal.versions import gate
    from selfheal.versions.catalog import Versions
    from selfheal.versions.checkout import from_backup, restore_stages
    from selfheal.versions.promote import promote
    from selfheal.versions.rollback import rollback

    proc = vcs.dvc("repro", cwd=cwd, check=False)
    validation = gate.judged(Versions(current(cwd), cwd)) or {}
    quality = audit.read(cwd / workspace.DATA_QUALITY, {}) or {}
    out: dict[str, Any] = {"metric": validation.get("metric"), "metric_name": validation.get("metric_name")}
    undo: list[str] | None = ["fix_data", "train", "validate", "monitor"]
    try:
        if proc.returncode != 0:
            raise SelfHealError(f"dvc repro failed: {(proc.stderr or proc.stdout).strip()[-2000:]}")
        if quality.get("valid_after") is False:
            out["note"] = f"data still invalid after fix_data: {'; '.join(quality.get('open_problems') or [])}"
            print(f"❌ {out['note']}: the new model is not promoted", file=sys.stderr)
        elif validation.get("passed"):
            out |= {"outcome": "promoted",
                    "version": promote(reason=reason, reload=reloader(service_url), cwd=cwd)["version"]}
            undo = None
            return out
        entry = rollback(reason=out.get("note"), reload=reloader(service_url), cwd=cwd)
        undo = ["fix_data", "monitor"]
        return out | {"outcome": "rolled_back", "version": (entry or {}).get("version_restored")}
    finally:  # unless promoted: the data, its drift measurement (and without a rollback the model) as before
        if undo:
            guard.restore_backup(backup_dir, [raw, raw.with_name(f"{raw.name}.dvc")])
            restore_stages(before, [s for s in undo if s in before], from_backup(backup_dir), cwd)
