"""The guide's success metrics, computed from the audit trail: `selfheal status` and metrics/self_healing.json.

- auto_fix_success_rate: % of issues handled automatically that ended fixed (data fixes, automatic rollbacks,
  retrains, service incidents), with the per-area counts;
- rollback_frequency: automatic and manual rollbacks in the last 7 and 30 days, and per week;
- mean_time_to_recovery_s: service incidents (detection -> healthy) and rollbacks (decision -> verified model);
- drift_response_time_s: drift detected (metrics/records/drift.json written) -> retraining finished;
- service_uptime_pct: over the last 7 days, the time not inside a recovery incident.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import mean
from typing import Any

from selfheal.core import atomic, audit, clock, workspace
from selfheal.core.project import Project

UPTIME_WINDOW = timedelta(days=7)


def _t(value: Any) -> datetime | None:
    try:
        return clock.parse_time(str(value)) if value else None
    except ValueError:
        return None


def _avg(values: list[float]) -> float | None:
    return round(mean(values), 3) if values else None


def _incidents(recoveries: list[dict[str, Any]], now: datetime) -> list[tuple[datetime, datetime, bool]]:
    """(start, end, recovered) per incident; attempts of one incident share its detected_at."""
    by_start: dict[str, list[dict[str, Any]]] = {}
    for e in recoveries:
        by_start.setdefault(str(e.get("detected_at") or e.get("timestamp")), []).append(e)
    out = []
    for start, attempts in by_start.items():
        began = _t(start)
        if began is None:
            continue
        done = next((a for a in attempts if a.get("success")), None)
        ended = (_t(done.get("recovered_at") or done.get("timestamp")) or now) if done else now
        out.append((began, ended, done is not None))
    return out


def compute(logs: dict[str, list[dict[str, Any]]], now: datetime) -> dict[str, Any]:
    """Metrics from log entries: logs = {"data_fix", "rollback", "retrain", "recovery", "alerts": [...]}."""
    fixes, rollbacks, retrains = logs.get("data_fix", []), logs.get("rollback", []), logs.get("retrain", [])
    incidents = _incidents(logs.get("recovery", []), now)
    auto_rollbacks = [e for e in rollbacks if e.get("action") == "auto_rollback"]
    areas = {
        "data_fix": (sum(bool(e.get("success")) for e in fixes), len(fixes)),
        "rollback": (sum(bool(e.get("success")) for e in auto_rollbacks), len(auto_rollbacks)),
        "retrain": (sum(e.get("outcome") in ("promoted", "rolled_back") for e in retrains), len(retrains)),
        "service": (sum(ok for _, _, ok in incidents), len(incidents)),
    }
    fixed, total = sum(a for a, _ in areas.values()), sum(b for _, b in areas.values())

    def since(entries: list[dict[str, Any]], days: int) -> int:
        return sum(1 for e in entries if (t := _t(e.get("timestamp"))) and now - t <= timedelta(days=days))

    service_ttr = [(end - start).total_seconds() for start, end, ok in incidents if ok]
    rollback_ttr = [float(e["duration_s"]) for e in rollbacks if e.get("success") and e.get("duration_s") is not None]
    drift_rt = [(t - d).total_seconds() for e in retrains
                if (t := _t(e.get("timestamp"))) and (d := _t(e.get("drift_detected_at")))]
    window_start = now - UPTIME_WINDOW
    down = sum(max(0.0, (min(end, now) - max(start, window_start)).total_seconds()) for start, end, _ in incidents)
    return {
        "generated_at": now.replace(microsecond=0).isoformat(),
        "auto_fix_success_rate": round(100 * fixed / total, 1) if total else None,
        "issues_handled": {k: {"fixed": a, "total": b} for k, (a, b) in areas.items()},
        "rollback_frequency": {
            "auto_last_7d": since(auto_rollbacks, 7), "all_last_7d": since(rollbacks, 7),
            "all_last_30d": since(rollbacks, 30), "per_week": round(since(rollbacks, 30) * 7 / 30, 2),
        },
        "mean_time_to_recovery_s": _avg(service_ttr + rollback_ttr),
        "mean_service_recovery_s": _avg(service_ttr),
        "mean_rollback_s": _avg(rollback_ttr),
        "drift_response_time_s": _avg(drift_rt),
        "service_uptime_pct": round(100 * (1 - down / UPTIME_WINDOW.total_seconds()), 3),
        "service_incidents_7d": sum(1 for _, end, _ in incidents if end >= window_start),
        "escalations": len(logs.get("alerts", [])),
    }


def read_logs(project: Project, cwd: Path = Path(".")) -> dict[str, list[dict[str, Any]]]:
    paths = {"data_fix": workspace.DATA_FIX_LOG, "rollback": workspace.ROLLBACK_LOG, "retrain": workspace.RETRAINING_LOG,
             "recovery": workspace.RECOVERY_LOG, "alerts": workspace.ALERTS_LOG}
    return {name: audit.entries(cwd / project.record(path)) for name, path in paths.items()}


def write_status(project: Project, cwd: Path = Path(".")) -> dict[str, Any]:
    """The metrics, also written to metrics/self_healing.json (a configured project: its records directory)."""
    metrics = compute(read_logs(project, cwd), datetime.now(UTC))
    atomic.write_json(cwd / project.record(workspace.SELF_HEALING), metrics)
    return metrics


def lines(m: dict[str, Any]) -> list[str]:
    def fmt(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else f"{v}{unit}"

    rf = m["rollback_frequency"]
    handled = ", ".join(f"{k} {v['fixed']}/{v['total']}" for k, v in m["issues_handled"].items())
    return [
        f"Auto-fix success rate:   {fmt(m['auto_fix_success_rate'], ' %')} ({handled})",
        f"Rollback frequency:      {rf['all_last_7d']} in 7 days ({rf['auto_last_7d']} automatic), "
        f"{rf['all_last_30d']} in 30 days, {rf['per_week']}/week",
        f"Mean time to recovery:   {fmt(m['mean_time_to_recovery_s'], ' s')} "
        f"(service {fmt(m['mean_service_recovery_s'], ' s')}, rollback {fmt(m['mean_rollback_s'], ' s')})",
        f"Drift response time:     {fmt(m['drift_response_time_s'], ' s')}",
        f"Service uptime (7 days): {m['service_uptime_pct']} % ({m['service_incidents_7d']} incident(s))",
        f"Escalations (alerts):    {m['escalations']}",
    ]
