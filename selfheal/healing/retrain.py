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
from typing import Any

from selfheal.core import audit, workspace
from selfheal.core.clock import now_iso, parse_time
from selfheal.healing.policy import retrain_decision
from selfheal.versions import vcs


def read_log(log: Path = workspace.RETRAINING_LOG) -> dict[str, Any]:
    """The retraining log: {"last_retrain_time": ..., "history": [...]} (the seed's shape)."""
    data = audit.read(log, {})
    return data if isinstance(data, dict) else {"last_retrain_time": None, "history": list(data)}


def last_retrain_time(log: Path = workspace.RETRAINING_LOG) -> datetime | None:
    value = read_log(log).get("last_retrain_time")
    return parse_time(value) if value else None


def _set_last(log: Path, when: str, entry: dict[str, Any] | None = None) -> None:
    def change(data: Any) -> dict[str, Any]:
        data = data if isinstance(data, dict) else {"history": list(data or [])}
        return {**data, "last_retrain_time": when, "history": [*data.get("history", []), *([entry] if entry else [])]}

    audit.update(log, change, default={})


def fold_current(raw: Path, current: Path, target: str) -> int:
    """Append the current batch's labelled rows that raw lacks to `raw` (atomically); returns rows added."""
    from selfheal.core import atomic
    from selfheal.core.errors import DataError
    from selfheal.pipeline.checks import read_csv_checked

    old, new = read_csv_checked(raw), read_csv_checked(current)
    if target not in new.columns:
        raise DataError(f"{current}: no target column {target!r}; a batch without labels cannot be trained on")
    missing = [c for c in old.columns if c not in new.columns]
    if missing:
        raise DataError(f"{current}: column(s) {missing} of {raw} missing; cannot fold the batch into training data")
    new = new[list(old.columns)]
    new = new[new[target].str.strip() != ""]
    seen = set(old.itertuples(index=False, name=None))
    rows = new[[r not in seen for r in new.itertuples(index=False, name=None)]].drop_duplicates()
    if rows.empty:
        return 0
    head = raw.read_bytes()
    tail = rows.to_csv(index=False, header=False, lineterminator="\n").encode()
    atomic.write_bytes(raw, head + (b"" if head.endswith(b"\n") else b"\n") + tail)
    return len(rows)


def _drift_input(drift_detected: bool, drift_score: float | None, threshold: float, drift_file: Path
                 ) -> tuple[bool, float, float, str]:
    """(detected, score, threshold, detected_at): the seed's flags when given, else the monitor's verdict in
    metrics/records/drift.json (with the threshold it applied, and the file's write time). Never re-judged here."""
    from selfheal.core import atomic
    from selfheal.core.errors import SelfHealError

    if drift_score is not None:  # the seed's --drift-score: judged by the monitor's own rule, the one rule
        from selfheal.pipeline.drift import dataset_drift

        return dataset_drift(drift_score, threshold), float(drift_score), threshold, now_iso()
    if drift_detected:  # the seed's --drift-detected alone: the caller's verdict
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
    """
    from selfheal.healing import guard
    from selfheal.service.client import reloader
    from selfheal.versions.checkout import from_backup, restore_stages
    from selfheal.versions.promote import promote
    from selfheal.versions.rollback import NothingToRestore, rollback

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
    raw = cwd / params.data.raw
    raw_dvc = raw.with_name(f"{raw.name}.dvc")  # `dvc repro` versions the folded data in it
    tracked = [p for paths in vcs.git_tracked_outputs(cwd / workspace.DVC_YAML).values() for p in paths]
    backup_dir = guard.backup([raw, raw_dvc, cwd / workspace.DVC_LOCK, *(cwd / p for p in tracked)], "retrain")
    before = vcs.read_lock(cwd / workspace.DVC_LOCK)
    added = fold_current(raw, cwd / params.data.current, params.data.target)
    _set_last(log, started)  # the cooldown starts now, even if this retrain is interrupted
    print(f"🔄 Starting model retraining... ({added} rows of {params.data.current} folded into {params.data.raw})")
    proc = vcs.dvc("repro", cwd=cwd, check=False)
    validation = audit.read(cwd / workspace.VALIDATION, {}) or {}
    outcome, version, undo = "failed", None, ["fix_data", "train", "validate", "monitor"]
    if proc.returncode != 0:
        print(f"❌ dvc repro failed:\n{(proc.stderr or proc.stdout).strip()[-2000:]}", file=sys.stderr)
    elif validation.get("passed"):
        version, outcome, undo = promote(reason=verdict.reason, reload=reloader(service_url), cwd=cwd)["version"], "promoted", []
    else:
        try:
            entry = rollback(reload=reloader(service_url), cwd=cwd)
            outcome, version, undo = "rolled_back", (entry or {}).get("version_restored"), ["fix_data", "monitor"]
        except NothingToRestore:
            outcome = "failed"
    if undo:  # the data, its drift measurement (and without a rollback the model) back to before this retrain
        guard.restore_backup(backup_dir, [raw, raw_dvc])
        restore_stages(before, [s for s in undo if s in before], from_backup(backup_dir), cwd)
    success = outcome == "promoted"
    entry = {
        "timestamp": now_iso(), "action": "forced_retrain" if force else "auto_retrain", "reason": verdict.reason,
        "success": success, "outcome": outcome, "drift_score": score, "drift_detected_at": detected_at,
        "started_at": started, "duration_s": round(time.perf_counter() - t0, 1), "rows_added": added,
        "version": version, "metric": validation.get("metric"), "metric_name": validation.get("metric_name"),
        "production": (workspace.read_production(cwd / workspace.PRODUCTION) or {}).get("version"),
        "backup": str(backup_dir),
    }
    _set_last(log, started, entry)
    print("✅ Retraining completed successfully" if success else
          f"⚠️  Retraining did not produce a better model ({outcome}); production is {entry['production']}")
    return entry
