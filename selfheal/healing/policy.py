"""The heal policy: observations in, ordered decisions out, each with its reason. Pure: no I/O, no clock.

Order is the guide's: fix data -> gate the model (promote or roll back) -> retrain on drift -> recover the service,
with one step of ours before the gate: monitoring must describe the model that serves. A missing, unreadable or
stale drift report (one that describes another model) is a problem to repair (`dvc repro` of the monitor stage),
never "healthy", and no model is promoted while its drift is unmeasured.
The gate first checks that the workspace model is one the pipeline made or registered: a corrupted, replaced or
deleted model file is restored from production, never retrained from (its validation describes other bytes).
Escalation (the guide's "when to intervene manually", thresholds in params.yaml `escalation`) is read from the
audit trail: when an issue keeps coming back, heal stops acting on it, raises an alert and exits non-zero. One
exception: restoring the production version is never blocked - it only restores a model already proven good -
but repeated rollbacks stop heal from producing new candidates (no pipeline rerun, no retrain) until a person looks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from selfheal.core.clock import parse_time
from selfheal.core.config import Params

# the issue (an audit log's subject) each step is about: our pipeline's steps, then a configured project's
ISSUES = {"fix_data": "data_quality", "monitor": "monitoring", "gate": "model", "retrain": "drift",
          "service": "service", "data": "data_quality", "model": "model", "drift": "drift"}
PASSIVE = {"ok", "skip", "report", "escalate", "refuse"}  # nothing done: found fine, left, said, or refused
# actions that only put back a model already proven good: never blocked by escalation
RESTORES = {"rollback", "restore"}
# actions that create a new candidate model: blocked once rollbacks repeat
PRODUCES_CANDIDATE = {"run_pipeline", "retrain"}


@dataclass(frozen=True)
class Observations:
    now: datetime
    pipeline_ran: bool = True  # dvc.lock has every stage
    raw_changed: bool = False  # data.raw differs from what fix_data last read
    data_quality: dict[str, Any] | None = None
    model_path: str = "the model file"  # the workspace model file (workspace.MODEL), for messages
    model_md5: str | None = None  # of the workspace model file; None when it is missing
    trained_md5: str | None = None  # the model dvc.lock's train stage recorded
    validation: dict[str, Any] | None = None
    production: dict[str, Any] | None = None
    registered_md5s: frozenset[str] = frozenset()
    held_back: dict[str, str] = field(default_factory=dict)  # md5 -> why: models a person rolled back from
    drift: dict[str, Any] | None = None  # metrics/drift.json; None when missing or unreadable
    drift_path: str = "the drift report"  # workspace.DRIFT, for messages
    drift_model_md5: str | None = None  # the model the drift report describes
    last_retrain: datetime | None = None
    batch_trained_by: str | None = None  # the version a retrain already trained on this very current batch
    service: dict[str, Any] | None = None  # None: no service was started here; else {"state", "detail"}
    # state: a client.Health state, or "stopped" (by the operator, on purpose)
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # issue -> its audit entries
    escalated: dict[str, str] = field(default_factory=dict)  # issue -> why a person must look (acknowledge clears)


@dataclass(frozen=True)
class Decision:
    step: str
    action: str  # passive (PASSIVE), or run_pipeline | run_monitor | fix | repro | promote | rollback | restore |
    #              retrain | recover
    reason: str

    @property
    def issue(self) -> str:
        return ISSUES[self.step]

    @property
    def acts(self) -> bool:
        return self.action not in PASSIVE


def _recent(entries: list[dict[str, Any]], now: datetime, window: timedelta, **match: Any) -> list[dict]:
    out = []
    for e in entries:
        try:
            when = parse_time(str(e.get("timestamp")))
        except ValueError:
            continue
        if now - when <= window and all(e.get(k) == v for k, v in match.items()):
            out.append(e)
    return out


def escalations(obs: Observations, params: Params) -> dict[str, str]:
    """{issue: the rule it broke} from the audit trail (whether the issue is present now is plan's concern), and
    from a candidate whose input schema changed: whatever else heal does with it, a person decides on the data."""
    found: dict[str, str] = {issue: f"{reason}; `selfheal acknowledge {issue}` once a person has looked"
                             for issue, reason in obs.escalated.items()}
    v = obs.validation or {}
    changes = v.get("schema_changes") or []
    if changes and v.get("model_md5") == obs.model_md5 and obs.model_md5 != (obs.production or {}).get("md5"):
        found["model"] = (f"the input schema changed ({'; '.join(changes)}): a person should look at the data "
                          "(`selfheal promote --accept-schema-change` takes a model trained on it)")
    esc = params.escalation
    window, hours = timedelta(hours=esc.window_hours), f"{esc.window_hours:g} h"
    for issue, entries in obs.logs.items():
        # one occurrence per incident: the attempts of one service incident share its detected_at
        recent = _recent(entries, obs.now, window)
        n = len({e["detected_at"] for e in recent if e.get("detected_at")}) + sum(not e.get("detected_at") for e in recent)
        if n > esc.max_same_issue:
            found[issue] = f"the same issue occurred {n} times in {hours} (more than {esc.max_same_issue})"
    rollbacks = _recent(obs.logs.get("model", []), obs.now, window, action="auto_rollback", success=True)
    if len(rollbacks) >= esc.max_auto_rollbacks:
        found["model"] = f"{len(rollbacks)} automatic rollbacks in {hours}: new models keep failing (systemic issue)"
    retrains = _recent(obs.logs.get("drift", []), obs.now, timedelta(days=esc.drift_window_days))
    if (obs.drift or {}).get("drift_detected") and len(retrains) >= esc.drift_retrains:
        found["drift"] = (f"drift is still detected after {len(retrains)} retrains in {esc.drift_window_days:g} days "
                          "(data pipeline issue?)")
    tail = 0
    for e in reversed(obs.logs.get("service", [])):
        if e.get("success"):
            break
        tail += int(e.get("attempts") or 1)
    if tail >= params.service_recovery.max_recovery_attempts:
        found["service"] = f"service recovery failed all {tail} attempts (max {params.service_recovery.max_recovery_attempts})"
    dq = obs.data_quality or {}
    if obs.pipeline_ran and not obs.raw_changed and dq and dq.get("valid_after") is False:
        found["data_quality"] = f"the auto-fix did not resolve the data: {dq.get('problems_after', '?')} problem(s) remain"
    return found


def _fix_data(obs: Observations, params: Params) -> Decision:
    enabled = params.data_quality.auto_fix_enabled
    if not obs.pipeline_ran or obs.raw_changed:
        what = "no pipeline outputs yet" if not obs.pipeline_ran else f"{params.data.raw} changed since the last run"
        if not enabled:
            return Decision("fix_data", "report", f"{what}, but data_quality.auto_fix_enabled is false: run `dvc repro`")
        return Decision("fix_data", "run_pipeline", f"{what}: `dvc repro` fixes it (fix_data) and trains a candidate")
    dq = obs.data_quality or {}
    if dq.get("valid_after") is False:
        return Decision("fix_data", "report", f"data still invalid after fix_data ({dq.get('problems_after')} problem(s))")
    fixed = dq.get("problems_before", 0)
    return Decision("fix_data", "skip", f"{params.data.raw} unchanged since the last run; valid ({fixed} problem(s) fixed)")


def _foreign_model(obs: Observations) -> str | None:
    """What is wrong when the workspace model is none the pipeline made or registered (corrupted, replaced,
    deleted); None when it is one of them. Before the first run a missing model is simply not built yet."""
    if not obs.pipeline_ran:
        return None
    candidate = (obs.validation or {}).get("model_md5")
    known = ({candidate, obs.trained_md5} | obs.registered_md5s) - {None}
    if obs.model_md5 in known:
        return None
    if obs.model_md5 is None:
        return f"{obs.model_path} is missing"
    return (f"{obs.model_path} (md5 {obs.model_md5}) is neither the validated model (md5 {candidate}) nor a registered "
            "version: corrupted or replaced")


def _stale_monitoring(obs: Observations) -> str | None:
    """What is wrong with monitoring for the workspace model (None: its drift is measured)."""
    if obs.drift is None:
        return f"{obs.drift_path} is missing or unreadable: drift was never measured for this model"
    if obs.drift_model_md5 != obs.model_md5:
        return (f"{obs.drift_path} describes model {str(obs.drift_model_md5)[:12]}, not the current model "
                f"{str(obs.model_md5)[:12]}: stale")
    return None


def _monitor(obs: Observations, params: Params) -> Decision:
    """Measure drift for the model that serves or is about to (not for a model the gate will replace)."""
    if not obs.pipeline_ran or obs.raw_changed:
        return Decision("monitor", "skip", "the pipeline has to run first (it measures drift too)")
    if _foreign_model(obs):
        return Decision("monitor", "skip", "the gate restores the model first")
    v = obs.validation or {}
    if v.get("model_md5") == obs.model_md5 and not v.get("passed") and obs.model_md5 != (obs.production or {}).get("md5"):
        return Decision("monitor", "skip", "the workspace model failed validation: the gate decides on it first")
    stale = _stale_monitoring(obs)
    if stale:
        return Decision("monitor", "run_monitor", f"{stale}: the monitor stage measures it")
    return Decision("monitor", "skip", f"drift measured for the current model ({str(obs.model_md5)[:12]})")


def _restore(obs: Observations, params: Params, wrong: str) -> Decision:
    prod = obs.production
    if prod is None:
        return Decision("gate", "escalate", f"{wrong}, and no version was ever promoted: nothing to restore; "
                                            "`dvc checkout` or `dvc repro` rebuilds it")
    target = f"production {prod['version']} (md5 {prod.get('md5')})"
    return _to_production(params, "restore", wrong, target, f"selfheal rollback --version {prod['version']}")


def _to_production(params: Params, action: str, problem: str, target: str, command: str) -> Decision:
    """Put production back (rollback / restore); with auto_rollback_enabled off, say which command would."""
    if not params.model_validation.auto_rollback_enabled:
        return Decision("gate", "report", f"{problem}; model_validation.auto_rollback_enabled is false: "
                                          f"run `{command}` to restore {target}")
    return Decision("gate", action, f"{problem}: restore {target}")


def _gate(obs: Observations, params: Params) -> Decision:
    v, prod = obs.validation, obs.production
    wrong = _foreign_model(obs)
    if wrong:
        return _restore(obs, params, wrong)
    if v is None:
        return Decision("gate", "skip", "no validation result yet")
    candidate, prod_md5, prod_name = v.get("model_md5"), (prod or {}).get("md5"), (prod or {}).get("version")
    score = f"{v.get('metric_name')} {v.get('metric', float('nan')):.3f}, threshold {v.get('threshold')}"
    if v.get("passed"):
        if candidate != obs.model_md5:
            return Decision("gate", "report", "the validation result describes another model file: run `dvc repro`")
        if candidate == prod_md5:
            return Decision("gate", "skip", f"production {prod_name} is the validated model ({score})")
        why = ("registered earlier: assign it production again" if candidate in obs.registered_md5s
               else "promote it to production")
        passed = f"model {str(candidate)[:12]} passed validation ({score})"
        if candidate in obs.held_back:
            return Decision("gate", "report", f"{passed}, but {obs.held_back[candidate]}")
        stale = _stale_monitoring(obs)
        if stale:
            return Decision("gate", "report", f"{passed}, but monitoring is not current ({stale}): not promoted "
                                              "until drift is measured for it")
        return Decision("gate", "promote", f"{passed}: {why}")
    changes = v.get("schema_changes") or []
    if changes and v.get("passed_except_schema") and candidate == obs.model_md5 and candidate != prod_md5:
        return Decision("gate", "escalate", f"model {str(candidate)[:12]} passed validation ({score}) but its input "
                                            f"schema differs from production {prod_name}: {'; '.join(changes)}; "
                                            "not promoted automatically: `selfheal promote --accept-schema-change` "
                                            "promotes it, `selfheal rollback` keeps production")
    failures = "".join(f"; {r}" for r in v.get("failures") or [])
    failed = f"model {str(candidate)[:12]} failed validation ({score}{failures})"
    if candidate == prod_md5:
        return Decision("gate", "escalate", f"production {prod_name} itself fails validation now ({score}); "
                                            "no better version to restore automatically")
    if prod is None:
        return Decision("gate", "escalate", f"{failed} and no version was ever promoted: nothing to roll back to")
    return _to_production(params, "rollback", failed, f"production {prod['version']}", "selfheal rollback")


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    next_allowed: datetime | None = None
    blocked_by_config: bool = False


def retrain_decision(
    *,
    drift_detected: bool,
    drift_score: float,
    threshold: float,
    last_retrain: datetime | None,
    now: datetime,
    cooldown_hours: float,
    enabled: bool = True,
    force: bool = False,
) -> RetrainDecision:
    """Retrain when the monitor detected drift and the cooldown has passed.

    `drift_detected` is the monitor's verdict (selfheal.pipeline.profile_drift.dataset_drift), never judged again here:
    `drift_score` and `threshold` (the one the monitor applied) only explain it. `force` skips the cooldown
    (never the drift condition); `enabled` is drift_detection.auto_retrain_enabled.
    """
    if not drift_detected:
        return RetrainDecision(False, f"No retraining needed: no drift detected (score {drift_score:.2f}, "
                                      f"threshold {threshold:.2f})")
    found = f"Data drift detected (score {drift_score:.2f}, threshold {threshold:.2f})"
    if not enabled and not force:
        return RetrainDecision(False, f"{found}; drift_detection.auto_retrain_enabled is false", blocked_by_config=True)
    if last_retrain is not None and not force:
        next_allowed = last_retrain + timedelta(hours=cooldown_hours)
        if now < next_allowed:
            return RetrainDecision(
                False,
                f"{found}; in cooldown until {next_allowed.isoformat()} (last retrain {last_retrain.isoformat()}, "
                f"{cooldown_hours:g} h cooldown; --force skips it)",
                next_allowed,
            )
    why = "--force: cooldown skipped" if force and last_retrain else "conditions met for automatic retraining"
    return RetrainDecision(True, f"{found}; {why}")


def _retrain(obs: Observations, params: Params) -> Decision:
    d, dd = obs.drift, params.drift_detection
    if d is None:
        return Decision("retrain", "skip", "no drift report yet")
    stale = obs.pipeline_ran and _stale_monitoring(obs)
    if stale:
        return Decision("retrain", "skip", f"no current drift measurement ({stale})")
    measured = float(d.get("threshold", dd.drift_threshold))
    verdict = retrain_decision(
        drift_detected=bool(d.get("drift_detected")), drift_score=float(d.get("drift_score") or 0.0),
        threshold=measured, last_retrain=obs.last_retrain, now=obs.now,
        cooldown_hours=dd.retraining_cooldown_hours, enabled=dd.auto_retrain_enabled,
    )
    reason = verdict.reason
    if verdict.retrain and obs.batch_trained_by:
        return Decision("retrain", "report", f"{reason}, but {obs.batch_trained_by} was already trained on this batch "
                        f"({params.data.current}): retraining would fold nothing new. The drift reference now mixes "
                        "the old training data with this batch, so the batch still differs from most of it; a new "
                        "batch is measured afresh, and a person decides whether this one is the new normal")
    if measured != dd.drift_threshold:
        reason += f" (params now say drift_threshold {dd.drift_threshold:g}: `dvc repro monitor` applies it)"
    if verdict.retrain:
        return Decision("retrain", "retrain", reason)
    return Decision("retrain", "report" if verdict.blocked_by_config else "skip", reason)


def _service(obs: Observations, params: Params) -> Decision:
    s = obs.service
    if s is None:
        return Decision("service", "skip", "no service was started in this project")
    if s.get("state") in ("healthy", "stopped"):
        return Decision("service", "skip", f"service {s.get('detail')}")
    if s.get("state") == "foreign":  # another project's service holds our URL: ours cannot serve, a person decides
        return Decision("service", "escalate", f"{s.get('detail')}: this project's service cannot serve there; stop "
                                               "the other service or set service_recovery.service_url to a free port")
    if not params.service_recovery.auto_recovery_enabled:
        return Decision("service", "report", f"{s.get('detail')}; service_recovery.auto_recovery_enabled is false")
    return Decision("service", "recover", str(s.get("detail")))


def plan(obs: Observations, params: Params) -> list[Decision]:
    """One decision per step, in order; an escalated issue's action becomes an `escalate` decision."""
    blocked = escalations(obs, params)
    out = []
    for decide in (_fix_data, _monitor, _gate, _retrain, _service):
        d = decide(obs, params)
        rule = blocked.get(d.issue) or (blocked.get("model") if d.action in PRODUCES_CANDIDATE else None)
        if d.action in RESTORES and rule:
            out += [d, Decision(d.step, "escalate", f"{rule}; rolled back, but a person should look")]
        elif (d.acts or d.action == "report") and rule:
            out.append(Decision(d.step, "escalate", f"{rule}; heal will not {d.action.replace('_', ' ')} again "
                                                    f"until this is resolved ({d.reason})"))
        else:
            out.append(d)
    return out
