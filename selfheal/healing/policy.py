"""The heal policy: observations in, ordered decisions out, each with its reason. Pure: no I/O, no clock.

One policy for every project kind. Order: data (fix the configured data files, build a candidate when data,
params or code changed) -> monitor (only where drift is a stage's output, as in our pipeline: the report must
describe the model that serves, and no model is promoted while its drift is unmeasured) -> model (the gate:
promote, roll back, restore outputs whose bytes are not what dvc.lock pins) -> drift (retrain, cooldown) ->
service (recover). A step with nothing configured is left out.
Escalation (the guide's "when to intervene manually") is read from the audit trail: when an issue keeps coming
back, heal stops acting on it, raises an alert and exits non-zero. One exception: restoring the production
version is never blocked - it only restores a model already proven good - but repeated rollbacks stop heal from
producing new candidates (no rebuild, no retrain) until a person looks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from selfheal.core.clock import parse_time
from selfheal.core.config import EscalationParams

ISSUES = {"data": "data_quality", "monitor": "monitoring", "model": "model", "drift": "drift", "service": "service"}
PASSIVE = {"ok", "skip", "report", "escalate", "refuse"}  # nothing done: found fine, left, said, or refused
RESTORES = {"rollback", "restore"}  # only put back a model already proven good: never blocked by escalation
PRODUCES_CANDIDATE = {"repro", "retrain"}  # blocked once rollbacks repeat


@dataclass(frozen=True)
class Settings:
    """What the policy reads of the configuration (params.yaml's groups for our pipeline, selfheal.yaml's
    sections for any other project), and the names its reasons use."""
    escalation: EscalationParams = field(default_factory=EscalationParams)
    auto_fix: bool = True
    repro_fixes: bool = False  # the build itself fixes the data (our fix_data stage): auto_fix off only reports
    auto_rollback: bool = True
    auto_retrain: bool = True
    cooldown_hours: float = 24.0
    drift_threshold: float = 0.5
    auto_recovery: bool = True
    max_recovery_attempts: int = 3
    current: str = "the current batch"
    stage: str = "prod"  # the GTO stage that means production
    fix_switch: str = "data.quality.auto_fix_enabled"  # the keys a reason names, as the user writes them
    rollback_switch: str = "model_validation.auto_rollback_enabled"
    retrain_switch: str = "drift.auto_retrain_enabled"
    recovery_switch: str = "service_recovery.auto_recovery_enabled"


@dataclass(frozen=True)
class Observations:
    now: datetime
    # data
    built: bool = True  # dvc.lock has every model stage
    changed: tuple[str, ...] = ()  # watched data whose bytes differ from what dvc.lock recorded
    edited_params: tuple[str, ...] = ()  # `file:key` a stage recorded that the params file no longer holds
    params_rejected: bool = False  # ... exactly the params of a candidate the gate rolled back
    failed_build: dict[str, Any] | None = None  # the last candidate that failed to build: error, attempts
    inputs_moved: tuple[str, ...] = ()  # its inputs that changed since
    data_error: str | None = None  # a data file or setting no fix can get past
    faulty: tuple[str, ...] = ()  # data.fix files with something to fix
    faults_left: tuple[str, ...] = ()  # faults left because auto-fix is off
    data_quality: dict[str, Any] | None = None  # the fix stage's report (our pipeline's metrics/data_quality.json)
    # model
    candidate_error: str | None = None
    candidate: str | None = None  # the workspace version's identity as dvc.lock pins it
    altered: tuple[str, ...] = ()  # how version outputs are not the bytes dvc.lock pins ("model.pkl is missing")
    verdict: dict[str, Any] | None = None  # the gate's verdict on the candidate against production
    verdict_error: str | None = None
    production: dict[str, Any] | None = None  # {"version", "tag", "md5": identity, ...}
    registered: frozenset[str] = frozenset()  # identities of every registered version
    held_back: dict[str, str] = field(default_factory=dict)  # identity -> why: models a person rolled back from
    # monitoring, where a stage measures drift
    monitor_stage: bool = False
    monitored: str | None = None  # the model identity the drift report describes
    drift_path: str = "the drift report"
    # drift
    drift: dict[str, Any] | None = None  # drift_detected, drift_score, threshold; None: not measured
    drift_error: str | None = None
    last_retrain: datetime | None = None
    batch_retrained: str | None = None  # why retraining on this very batch again would fold nothing new
    # service
    service: dict[str, Any] | None = None  # None: nothing to watch; else {"state", "detail"}
    watcher: int | None = None  # pid of a running `recover --watch`
    restartable: bool = True
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # issue -> its audit entries
    escalated: dict[str, str] = field(default_factory=dict)  # issue -> why a person must look (acknowledge clears)


@dataclass(frozen=True)
class Decision:
    step: str
    action: str  # passive (PASSIVE), or fix | repro | run_monitor | promote | rollback | restore | retrain | recover
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


def _prod_md5(obs: Observations) -> str | None:
    return (obs.production or {}).get("md5")


def escalations(obs: Observations, s: Settings) -> dict[str, str]:
    """{issue: the rule it broke} from the audit trail (whether the issue is present now is plan's concern), and
    from a candidate whose input schema changed: whatever else heal does with it, a person decides on the data."""
    found: dict[str, str] = {issue: f"{reason}; `selfheal acknowledge {issue}` once a person has looked"
                             for issue, reason in obs.escalated.items()}
    v = obs.verdict or {}
    changes = v.get("schema_changes") or []
    if changes and obs.candidate and obs.candidate != _prod_md5(obs):
        found["model"] = (f"the input schema changed ({'; '.join(changes)}): a person should look at the data "
                          "(`selfheal promote --accept-schema-change` takes a model trained on it)")
    esc = s.escalation
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
    if tail >= s.max_recovery_attempts:
        found["service"] = f"service recovery failed all {tail} attempts (max {s.max_recovery_attempts})"
    dq = obs.data_quality or {}
    if obs.built and not obs.changed and dq.get("valid_after") is False:
        found["data_quality"] = f"the auto-fix did not resolve the data: {dq.get('problems_after', '?')} problem(s) remain"
    return found


def _data(obs: Observations, s: Settings) -> Decision:
    if obs.failed_build is not None:
        if obs.inputs_moved:
            return Decision("data", "repro", "inputs changed since the candidate that failed to build: "
                            + ", ".join(obs.inputs_moved))
        return Decision("data", "refuse", f"the candidate made from the current inputs failed to build "
                        f"{obs.failed_build.get('attempts')} time(s) ({obs.failed_build.get('error')}); production's "
                        "outputs were restored and still serve; heal builds again when an input or the code changes")
    if obs.edited_params:
        edited = ", ".join(obs.edited_params)
        if obs.params_rejected:
            return Decision("data", "report", f"params changed since dvc.lock ({edited}), but the candidate built "
                            "from exactly these params failed the gate and was rolled back; production serves. Change "
                            "them back (or again), or `selfheal promote --force` after `dvc repro`")
        return Decision("data", "repro", f"params changed since dvc.lock: {edited}")
    if obs.data_error:
        return Decision("data", "refuse", obs.data_error)
    if obs.faulty:
        return Decision("data", "fix", f"data faults in {', '.join(obs.faulty)}")
    if not obs.built or obs.changed:
        what = "no pipeline outputs yet" if not obs.built else f"data changed since dvc.lock: {', '.join(obs.changed)}"
        if s.repro_fixes and not s.auto_fix:
            return Decision("data", "report", f"{what}, but {s.fix_switch} is false: run `dvc repro`")
        return Decision("data", "repro", f"{what}: `dvc repro` " + (
            "fixes it (fix_data) and trains a candidate" if s.repro_fixes else "builds a candidate"))
    dq = obs.data_quality or {}
    if dq.get("valid_after") is False:
        return Decision("data", "report", f"data still invalid after fix_data ({dq.get('problems_after')} problem(s))")
    if obs.faults_left:
        return Decision("data", "report", f"faults left ({s.fix_switch} is false): {'; '.join(obs.faults_left)}")
    fixed = f" ({dq['problems_before']} problem(s) fixed by the pipeline)" if dq.get("problems_before") else ""
    return Decision("data", "ok", f"data as dvc.lock recorded{fixed}")


def _stale_monitoring(obs: Observations) -> str | None:
    """What is wrong with monitoring for the workspace model (None: its drift is measured)."""
    if obs.drift is None:
        return f"{obs.drift_path} is missing or unreadable: drift was never measured for this model"
    if obs.monitored != obs.candidate:
        return (f"{obs.drift_path} describes model {str(obs.monitored)[:12]}, not the current model "
                f"{str(obs.candidate)[:12]}: stale")
    return None


def _monitor(obs: Observations, s: Settings) -> Decision | None:
    """Measure drift for the model that serves or is about to (not for a model the gate will replace)."""
    if not obs.monitor_stage:
        return None
    if not obs.built or obs.changed or (obs.edited_params and not obs.params_rejected):
        return Decision("monitor", "skip", "the pipeline has to run first (it measures drift too)")
    if obs.altered:
        return Decision("monitor", "skip", "the gate restores the model first")
    v = obs.verdict or {}
    if v and not v.get("passed") and obs.candidate != _prod_md5(obs):
        return Decision("monitor", "skip", "the gate has not passed the workspace model: it decides on it first")
    stale = _stale_monitoring(obs)
    if stale:
        return Decision("monitor", "run_monitor", f"{stale}: the monitor stage measures it")
    return Decision("monitor", "ok", f"drift measured for the current model ({str(obs.candidate)[:12]})")


def _to_production(s: Settings, action: str, problem: str, obs: Observations) -> Decision:
    """Put production back (rollback / restore); with auto-rollback off, say which command would."""
    prod = obs.production or {}
    target = f"production {prod.get('version')} (md5 {prod.get('md5')})"
    if not s.auto_rollback:
        return Decision("model", "report", f"{problem}; {s.rollback_switch} is false: run "
                                           f"`selfheal rollback --version {prod.get('version')}` to restore {target}")
    return Decision("model", action, f"{problem}: restore {target}")


def _model(obs: Observations, s: Settings) -> Decision:
    if not obs.built:
        return Decision("model", "skip", "no candidate yet: the pipeline has to run first")
    if obs.candidate_error:
        return Decision("model", "refuse", obs.candidate_error)
    prod, v = obs.production, obs.verdict
    ours = obs.candidate is not None and obs.candidate == _prod_md5(obs)
    if obs.altered:
        wrong = "; ".join(obs.altered)
        if prod is None:
            return Decision("model", "escalate", f"{wrong}, and no version was ever promoted: nothing to restore; "
                                                 "`dvc checkout` or `dvc repro` rebuilds it")
        return _to_production(s, "restore", wrong, obs)
    if obs.verdict_error:
        return Decision("model", "refuse", obs.verdict_error)
    if v is not None and v.get("model_md5") not in (None, obs.candidate):
        return Decision("model", "report", "the validation result describes another model file: run `dvc repro`")
    if ours:  # judged on its own: a bound or threshold raised since it was promoted
        assert prod is not None
        if v is None or v.get("passed"):
            return Decision("model", "ok", f"{prod.get('tag') or prod.get('version')} is {s.stage}")
        return Decision("model", "escalate", f"production {prod.get('version')} itself fails the gate now "
                                             f"({'; '.join(v.get('failures') or [])}); no better version to restore "
                                             "automatically")
    if v is None:
        return Decision("model", "refuse", "the candidate has no metrics yet: run `dvc repro`")
    score = f"{v.get('metric_name')} {v.get('metric', float('nan')):.4f}"
    name = f"candidate {str(obs.candidate)[:12]}"
    if v.get("passed"):
        passed = f"{name} passes the gate ({score}" + (f" vs {prod.get('version')})" if prod else
                                                        ", first production version)")
        if obs.candidate in obs.held_back:
            return Decision("model", "report", f"{passed}, but {obs.held_back[obs.candidate]}")
        stale = obs.monitor_stage and _stale_monitoring(obs)
        if stale:
            return Decision("model", "report", f"{passed}, but monitoring is not current ({stale}): not promoted "
                                               "until drift is measured for it")
        again = ": registered earlier, assign it production again" if obs.candidate in obs.registered else ""
        return Decision("model", "promote", passed + again)
    changes = v.get("schema_changes") or []
    if changes and v.get("passed_except_schema"):
        return Decision("model", "escalate", f"{name} passes the gate ({score}) but its input schema differs from "
                                             f"production {(prod or {}).get('version')}: {'; '.join(changes)}; not "
                                             "promoted automatically: `selfheal promote --accept-schema-change` "
                                             "promotes it, `selfheal rollback` keeps production")
    failed = f"{name} fails the gate ({score}): {'; '.join(v.get('failures') or [])}"
    if prod is None:
        return Decision("model", "escalate", f"{failed}; no version was ever promoted: nothing to roll back to")
    return _to_production(s, "rollback", failed, obs)


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
    switch: str = "drift_detection.auto_retrain_enabled",
) -> RetrainDecision:
    """Retrain when drift was detected and the cooldown has passed.

    `drift_detected` is the drift measurement's verdict (selfheal.pipeline.profile_drift.dataset_drift), never judged
    again here: `drift_score` and `threshold` (the one it applied) only explain it. `force` skips the cooldown
    (never the drift condition); `enabled` is the auto-retrain switch named `switch`.
    """
    if not drift_detected:
        return RetrainDecision(False, f"No retraining needed: no drift detected (score {drift_score:.2f}, "
                                      f"threshold {threshold:.2f})")
    found = f"Data drift detected (score {drift_score:.2f}, threshold {threshold:.2f})"
    if not enabled and not force:
        return RetrainDecision(False, f"{found}; {switch} is false", blocked_by_config=True)
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


def retrain_verdict(obs: Observations, s: Settings, force: bool = False) -> RetrainDecision:
    """The retrain decision on the measured drift; a batch already retrained on is not retrained on again."""
    d = obs.drift or {}
    verdict = retrain_decision(
        drift_detected=bool(d.get("drift_detected")), drift_score=float(d.get("drift_score") or 0.0),
        threshold=float(d.get("threshold", s.drift_threshold)), last_retrain=obs.last_retrain, now=obs.now,
        cooldown_hours=s.cooldown_hours, enabled=s.auto_retrain, force=force, switch=s.retrain_switch)
    if verdict.retrain and obs.batch_retrained and not force:
        return RetrainDecision(False, f"{verdict.reason}, but {obs.batch_retrained}", blocked_by_config=True)
    return verdict


def _drift(obs: Observations, s: Settings) -> Decision | None:
    if obs.drift_error:
        return Decision("drift", "refuse", obs.drift_error)
    if obs.drift is None:
        return Decision("drift", "skip", "no drift report yet") if obs.monitor_stage else None
    stale = obs.monitor_stage and obs.built and _stale_monitoring(obs)
    if stale:
        return Decision("drift", "skip", f"no current drift measurement ({stale})")
    verdict = retrain_verdict(obs, s)
    reason = verdict.reason
    measured = float(obs.drift.get("threshold", s.drift_threshold))
    if measured != s.drift_threshold and obs.monitor_stage:
        reason += f" (params now say drift_threshold {s.drift_threshold:g}: `dvc repro monitor` applies it)"
    if verdict.retrain:
        return Decision("drift", "retrain", reason)
    if verdict.blocked_by_config:
        return Decision("drift", "report", reason)
    return Decision("drift", "skip" if obs.drift.get("drift_detected") else "ok", reason)


def _service(obs: Observations, s: Settings) -> Decision | None:
    svc = obs.service
    if svc is None:
        return None
    state, detail = svc.get("state"), str(svc.get("detail"))
    if state == "healthy":
        return Decision("service", "ok", detail)
    if state in ("stopped", "absent"):  # stopped by the operator on purpose, or never started here
        return Decision("service", "skip", detail)
    if state == "foreign":  # another project's service holds our URL: ours cannot serve, a person decides
        return Decision("service", "escalate", f"{detail}: this project's service cannot serve there; stop the "
                                               "other service or set the service URL to a free port")
    if obs.watcher is not None:  # two restarters would stop each other's fresh process
        return Decision("service", "skip", f"{detail}; left to the running watcher (pid {obs.watcher})")
    if not obs.restartable:
        return Decision("service", "refuse", f"{detail}; service.start is not set, so selfheal cannot restart it")
    if not s.auto_recovery:
        return Decision("service", "report", f"{detail}; {s.recovery_switch} is false")
    return Decision("service", "recover", detail)


def plan(obs: Observations, s: Settings) -> list[Decision]:
    """One decision per step that applies, in order; an escalated issue's action becomes an `escalate` one."""
    blocked = escalations(obs, s)
    out = []
    for decide in (_data, _monitor, _model, _drift, _service):
        d = decide(obs, s)
        if d is None:
            continue
        rule = blocked.get(d.issue) or (blocked.get("model") if d.action in PRODUCES_CANDIDATE else None)
        if d.action in RESTORES and rule:
            out += [d, Decision(d.step, "escalate", f"{rule}; rolled back, but a person should look")]
        elif (d.acts or d.action in ("report", "refuse")) and rule:
            out.append(Decision(d.step, "escalate", f"{rule}; heal will not {d.action.replace('_', ' ')} again "
                                                    f"until this is resolved ({d.reason})"))
        else:
            out.append(d)
    return out
