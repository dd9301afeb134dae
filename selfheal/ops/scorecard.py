"""The drill's scorecard: per fault kind and the guide's success metrics, as JSON data and as Markdown for a PR
comment."""

from __future__ import annotations

import statistics
from typing import Any

from selfheal.ops.trials import Trial


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarise(trials: list[Trial], baseline: dict[str, Any]) -> dict[str, Any]:
    """Per fault kind, and the guide's success metrics computed from the drill."""
    kinds: dict[str, dict[str, Any]] = {}
    for t in trials:
        k = kinds.setdefault(t.fault, {"group": t.group, "expected": t.expected, "trials": 0, "outcomes": {},
                                       "passed": 0})
        k["trials"] += 1
        k["outcomes"][t.outcome] = k["outcomes"].get(t.outcome, 0) + 1
        k["passed"] += t.ok
    for name, k in kinds.items():
        mine = [t for t in trials if t.fault == name]
        k["median_detect_s"] = _median([t.time_to_detect_s for t in mine])
        k["median_recover_s"] = _median([t.time_to_recover_s for t in mine])
        k["requests"] = sum(t.requests for t in mine)
        k["requests_failed"] = sum(t.requests_failed for t in mine)
        k["end_state_good"] = sum(t.end_state_good for t in mine)
    healed = [t for t in trials if t.outcome == "healed"]
    watch = [t for t in healed if t.fault in ("service_crash", "service_hang")]
    drift = [t for t in healed if t.fault == "drift_most_columns"]
    service = [t for t in trials if t.healthy_share is not None and t.group == "service"]
    drift_s = _median([t.time_to_recover_s for t in drift])
    return {
        "trials": len(trials),
        "passed": sum(t.ok for t in trials),
        "missed": sum(t.outcome == "missed" for t in trials),
        "wrong": sum(t.outcome == "wrong" for t in trials),
        "auto_fix_success_rate": round(100 * sum(t.ok for t in trials) / len(trials), 1) if trials else None,
        "rollbacks": sum(any(a in t.action for a in ("rollback", "restore")) for t in trials),
        "mttr_s": _median([t.time_to_recover_s for t in healed]),
        "mttr_service_crash_s": _median([t.time_to_recover_s for t in watch if t.fault == "service_crash"]),
        "mttr_service_hang_s": _median([t.time_to_recover_s for t in watch if t.fault == "service_hang"]),
        "failed_requests_during_rollbacks": sum(t.requests_failed for t in trials if t.group == "model"),
        "drift_response_s": drift_s,
        "drift_response_vs_cold_repro": round(drift_s / baseline["cold_repro_s"], 2) if drift_s else None,
        "service_uptime_pct": round(100 * statistics.fmean(t.healthy_share or 0.0 for t in service), 2)
        if service else None,
        "kinds": kinds,
    }


def markdown(card: dict[str, Any]) -> str:
    s = card["summary"]
    project = card.get("project") or {"kind": "selfheal", "artifact": "model", "name": "selfheal"}
    ours = project["kind"] == "selfheal"
    about = ("our own pipeline, " + ("quick" if card["quick"] else "default") + " data" if ours
             else f"guarded through selfheal.yaml, kind {project['kind']}, its own data")
    lines = [
        f"# selfheal drill: {s['passed']}/{s['trials']} trials as expected",
        "",
        f"Project `{project['name']}` ({about}), artifact `{project['artifact']}`. Seed {card['seed']}, revision "
        f"`{card['revision']}`, {card['repeat']} trial(s) per kind, {card['started_at']}; baseline "
        f"{card['baseline']['version']}, {'cold' if ours else 'baseline'} `dvc repro` "
        f"{card['baseline']['cold_repro_s']} s. Missed: {s['missed']}, wrong actions: {s['wrong']}.",
        "",
        "Each trial starts from a fresh copy of the baseline: no restart budget, cooldown or record carries over "
        "from one trial or repeat to the next. Outages are measured from the outside (the load's requests and a "
        "health probe); a trial is missed only when the service was down or wrong at the end."
        + (f" Busy machine: {card['busy']} CPU-bound process(es) ran throughout." if card.get("busy") else ""),
        "",
    ]
    groups = {k["group"] for k in s["kinds"].values()}
    for group in ("data", "model", "drift", "service", "config"):
        rows = [(n, k) for n, k in s["kinds"].items() if k["group"] == group]
        if not rows:
            continue
        lines += [f"## {group}", "", "| fault | expected | outcome | pass | detect s | recover s | failed requests "
                  "| end state good |", "|---|---|---|---|---|---|---|---|"]
        for name, k in rows:
            outcome = ", ".join(f"{o} {c}" for o, c in k["outcomes"].items())
            failed = f"{k['requests_failed']}/{k['requests']}" if k["requests"] else "-"
            lines.append(f"| {name} | {k['expected']} | {outcome} | {k['passed']}/{k['trials']} | "
                         f"{fmt(k['median_detect_s'])} | {fmt(k['median_recover_s'])} | {failed} | "
                         f"{k['end_state_good']}/{k['trials']} |")
        lines.append("")
    lines += [
        "## The guide's success metrics, measured",
        "",
        f"- Auto-fix success rate: {fmt(s['auto_fix_success_rate'])} % of trials ended as expected",
        f"- Rollbacks (and restores) performed: {s['rollbacks']}"
        + (f"; failed requests during them: {s['failed_requests_during_rollbacks']}"
           if any(k["requests"] for k in s["kinds"].values()) else " (no service under load in this drill)"),
        f"- Mean time to recovery (median of healed trials): {fmt(s['mttr_s'])} s"
        + (f"; service crash in watch mode {fmt(s['mttr_service_crash_s'])} s, hang "
           f"{fmt(s['mttr_service_hang_s'])} s" if "service" in groups else ""),
    ]
    if "drift" in groups and ours:
        lines.append(f"- Drift response (drift detected to a promoted retrained model): {fmt(s['drift_response_s'])}"
                     f" s, {fmt(s['drift_response_vs_cold_repro'])}x the cold `dvc repro`")
    elif "drift" in groups:  # the baseline's repro of a cloned project is not cold: no ratio
        lines.append(f"- Drift response (drift detected to the retrained candidate judged by the gate): "
                     f"{fmt(s['drift_response_s'])} s")
    if "service" in groups:
        lines.append(f"- Service uptime during the service trials: {fmt(s['service_uptime_pct'])} % of health probes")
    lines.append("")
    if card.get("not_drilled"):
        lines += ["## Not drilled on this project", "", "Fault kinds that need what this project does not offer "
                  "(docs/guarding.md says how to offer it):", ""]
        lines += [f"- {name}: needs {needs}" for name, needs in card["not_drilled"].items()]
        lines.append("")
    problems = [t for t in card["trials"] if not t["ok"]]
    if problems:
        lines += ["## Trials not as expected", ""]
        for t in problems:
            lines.append(f"- {t['fault']} #{t['repeat']}: {t['outcome']} (expected {t['expected']}); "
                         f"{'; '.join(t['end_state']) or t['note'] or t['action']}")
            evidence = t.get("evidence") or {}
            if evidence:  # what the judge saw: a reader tells a fault from a judging error
                lines.append("  - evidence: " + "; ".join(
                    f"{key}: {'; '.join(value) or 'none' if isinstance(value, list) else fmt(value)}"
                    for key, value in evidence.items()))
        lines.append("")
    return "\n".join(lines)


def fmt(v: Any) -> str:
    return "-" if v is None else str(v)
