"""The heal policy is a pure function: every case is an observation in, decisions (with reasons) out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from selfheal.core.config import parse_params
from selfheal.core.project import OURS, load, parse
from selfheal.healing.observe import settings
from selfheal.healing.policy import Observations, Settings, escalations, plan

MODEL = "models/model.joblib"
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
PROD = {"version": "v0.0.2", "metric_name": "r2", "metric": 0.80, "md5": "p" * 32}
PASSED = {"metric_name": "r2", "metric": 0.80, "threshold": 0.7, "passed": True, "model_md5": "p" * 32}
FAILED = {"metric_name": "r2", "metric": 0.60, "threshold": 0.7, "passed": False, "model_md5": "c" * 32}
NO_DRIFT = {"drift_detected": False, "drift_score": 0.1}
DRIFT = {"drift_detected": True, "drift_score": 0.75}
DQ_OK = {"valid_before": False, "valid_after": True, "problems_before": 12, "problems_after": 0}


def params(**groups):
    """The policy's settings from our pipeline's params.yaml groups."""
    return settings(parse(OURS).with_params(parse_params(groups)))


HEALTHY = Observations(
    now=NOW, data_quality=DQ_OK, candidate="p" * 32, verdict=PASSED, production=PROD,
    registered=frozenset({"p" * 32}), drift=NO_DRIFT, monitor_stage=True, monitored="p" * 32,
    service={"state": "absent", "detail": "no service was started in this project"},
)


def actions(obs: Observations, p=None) -> dict[str, str]:
    """The first decision's action per step."""
    out: dict[str, str] = {}
    for d in plan(obs, p or params()):
        out.setdefault(d.step, d.action)
    return out


def ago(**delta) -> str:
    return (NOW - timedelta(**delta)).isoformat()


def test_healthy_pipeline_needs_nothing_and_says_why() -> None:
    decisions = plan(HEALTHY, params())
    assert [(d.step, d.action) for d in decisions] == [
        ("data", "ok"), ("monitor", "ok"), ("model", "ok"), ("drift", "ok"), ("service", "skip")]
    assert all(d.reason for d in decisions)
    assert "v0.0.2" in decisions[2].reason


def test_order_is_fix_monitor_gate_retrain_service() -> None:
    obs = replace(HEALTHY, changed=("data/raw/housing.csv",), verdict=FAILED, candidate="c" * 32, monitored="c" * 32, drift=DRIFT, service={"state": "down", "detail": "x"})
    assert [d.step for d in plan(obs, params())] == ["data", "monitor", "model", "drift", "service"]
    assert actions(obs) == {"data": "repro", "monitor": "skip", "model": "rollback", "drift": "retrain",
                            "service": "recover"}


@pytest.mark.parametrize("ran,changed", [(False, False), (True, True)])
def test_changed_or_missing_data_reruns_the_pipeline(ran: bool, changed: bool) -> None:
    d = plan(replace(HEALTHY, built=ran, changed=("data/raw/housing.csv",) if changed else ()), params())[0]
    assert d.action == "repro"


def test_data_fix_disabled_only_reports() -> None:
    p = params(data_quality={"auto_fix_enabled": False})
    d = plan(replace(HEALTHY, changed=("data/raw/housing.csv",)), p)[0]
    assert d.action == "report" and "auto_fix_enabled is false" in d.reason


def test_fix_that_did_not_resolve_escalates() -> None:
    obs = replace(HEALTHY, data_quality={**DQ_OK, "valid_after": False, "problems_after": 4})
    d = plan(obs, params())[0]
    assert d.action == "escalate" and "did not resolve" in d.reason


def test_passing_new_candidate_is_promoted() -> None:
    new = {**PASSED, "model_md5": "n" * 32}
    assert actions(replace(HEALTHY, verdict=new, candidate="n" * 32, monitored="n" * 32))["model"] == "promote"


def test_first_model_is_promoted_when_nothing_is_in_production() -> None:
    obs = replace(HEALTHY, production=None, registered=frozenset())
    assert actions(obs)["model"] == "promote"


def test_interrupted_promotion_is_finished() -> None:
    # registered (its version tag written) but never assigned production: production is still the older version
    older = {**PROD, "version": "v0.0.1", "md5": "o" * 32}
    obs = replace(HEALTHY, production=older, registered=frozenset({"o" * 32, "p" * 32}))
    decision = next(d for d in plan(obs, params()) if d.step == "model")
    assert decision.action == "promote" and "registered earlier" in decision.reason


def test_stale_validation_is_reported_not_acted_on() -> None:
    # `dvc repro train` without validate: dvc.lock pins the new model, validation.json still describes the old one
    d = plan(replace(HEALTHY, candidate="x" * 32), params())[2]
    assert d.action == "report" and "dvc repro" in d.reason


CORRUPTED = f"{MODEL} is md5 {'x' * 32}, not the {'p' * 32} dvc.lock pins"


@pytest.mark.parametrize("validation", [PASSED, FAILED])
def test_corrupted_model_is_restored_from_production_not_retrained(validation: dict) -> None:
    d = plan(replace(HEALTHY, altered=(CORRUPTED,), verdict=validation), params())[2]
    assert d.action == "restore" and d.acts
    assert "x" * 32 in d.reason and "p" * 32 in d.reason and "production v0.0.2" in d.reason


def test_missing_model_is_restored_from_production() -> None:
    d = plan(replace(HEALTHY, altered=(f"{MODEL} is missing",)), params())[2]
    assert d.action == "restore" and "models/model.joblib is missing" in d.reason and "p" * 32 in d.reason


def test_foreign_model_without_production_escalates_and_disabled_rollback_reports() -> None:
    d = plan(replace(HEALTHY, altered=(CORRUPTED,), production=None, registered=frozenset()), params())[2]
    assert d.action == "escalate" and "nothing to restore" in d.reason and "x" * 32 in d.reason
    p = params(model_validation={"auto_rollback_enabled": False})
    d = plan(replace(HEALTHY, altered=(CORRUPTED,)), p)[2]
    assert d.action == "report" and "selfheal rollback --version v0.0.2" in d.reason


def test_missing_model_before_the_first_run_is_just_not_built_yet() -> None:
    obs = replace(HEALTHY, built=False, candidate=None, verdict=None, production=None,
                  registered=frozenset())
    assert actions(obs) == {"data": "repro", "monitor": "skip", "model": "skip", "drift": "ok",
                            "service": "skip"}


def test_failed_candidate_is_rolled_back_to_production() -> None:
    d = plan(replace(HEALTHY, verdict=FAILED, candidate="c" * 32), params())[2]
    assert d.action == "rollback" and "v0.0.2" in d.reason and "0.600" in d.reason


def test_rollback_disabled_reports() -> None:
    p = params(model_validation={"auto_rollback_enabled": False})
    d = plan(replace(HEALTHY, verdict=FAILED, candidate="c" * 32), p)[2]
    assert d.action == "report" and "selfheal rollback" in d.reason


def test_failed_candidate_without_any_version_escalates() -> None:
    d = plan(replace(HEALTHY, verdict=FAILED, candidate="c" * 32, production=None), params())[2]
    assert d.action == "escalate" and "nothing to roll back to" in d.reason


def test_production_itself_failing_escalates() -> None:
    d = plan(replace(HEALTHY, verdict={**FAILED, "model_md5": PROD["md5"]}), params())[2]
    assert d.action == "escalate" and "itself fails" in d.reason


def test_drift_triggers_retrain_once_then_cooldown() -> None:
    obs = replace(HEALTHY, drift=DRIFT)
    assert actions(obs)["drift"] == "retrain"
    cooling = plan(replace(obs, last_retrain=NOW - timedelta(hours=2)), params())[3]
    assert cooling.action == "skip" and "cooldown" in cooling.reason
    assert actions(replace(obs, last_retrain=NOW - timedelta(hours=25)))["drift"] == "retrain"


def test_drift_below_threshold_and_disabled_retrain() -> None:
    assert actions(replace(HEALTHY, drift={"drift_detected": False, "drift_score": 0.3}))["drift"] == "ok"
    p = params(drift_detection={"auto_retrain_enabled": False})
    assert plan(replace(HEALTHY, drift=DRIFT), p)[3].action == "report"


def test_drift_is_judged_once_by_the_monitor() -> None:
    """A threshold changed in params after the monitor ran neither triggers nor blocks a retrain by itself: the
    monitor's verdict stands, and the reason says which threshold it applied and how to apply the new one."""
    measured = {"drift_detected": False, "drift_score": 0.125, "threshold": 0.5}
    d = plan(replace(HEALTHY, drift=measured), params(drift_detection={"drift_threshold": 0.1}))[3]
    assert d.action == "ok" and "no drift detected (score 0.12, threshold 0.50)" in d.reason
    assert "drift_threshold 0.1" in d.reason and "dvc repro monitor" in d.reason
    assert "below threshold 0.10" not in d.reason
    detected = {**measured, "drift_detected": True, "drift_score": 0.6}
    assert plan(replace(HEALTHY, drift=detected), params(drift_detection={"drift_threshold": 0.9}))[3].action == "retrain"


def test_service_down_is_recovered_unless_disabled_or_never_started() -> None:
    down = {"state": "down", "detail": "connection refused"}
    assert actions(replace(HEALTHY, service=down))["service"] == "recover"
    assert actions(replace(HEALTHY, service={"state": "healthy", "detail": "ok"}))["service"] == "ok"
    assert "service" not in actions(replace(HEALTHY, service=None))  # nothing to watch: no step
    p = params(service_recovery={"auto_recovery_enabled": False})
    assert plan(replace(HEALTHY, service=down), p)[4].action == "report"


def test_another_projects_service_is_escalated_and_an_operator_stop_is_left_alone() -> None:
    foreign = {"state": "foreign", "detail": "http://127.0.0.1:8000 answers as another project's service"}
    d = {d.step: d for d in plan(replace(HEALTHY, service=foreign), params())}["service"]
    assert d.action == "escalate" and "another project's service" in d.reason and "service URL" in d.reason
    stopped = {"state": "stopped", "detail": "stopped by the operator (SIGTERM to pid 7 at t)"}
    d = {d.step: d for d in plan(replace(HEALTHY, service=stopped), params())}["service"]
    assert d.action == "skip" and "stopped by the operator" in d.reason


def test_same_issue_more_than_three_times_in_24h_escalates() -> None:
    fixes = [{"timestamp": ago(hours=h), "action": "auto_fix", "success": True} for h in (1, 2, 3, 4)]
    obs = replace(HEALTHY, changed=("data/raw/housing.csv",), logs={"data_quality": fixes})
    d = plan(obs, params())[0]
    assert d.action == "escalate" and "4 times in 24 h" in d.reason
    # three is still fine, and old entries do not count
    assert actions(replace(obs, logs={"data_quality": fixes[:3]}))["data"] == "repro"
    old = [{**e, "timestamp": ago(days=2)} for e in fixes]
    assert actions(replace(obs, logs={"data_quality": old}))["data"] == "repro"


def test_escalation_only_when_the_issue_is_present() -> None:
    fixes = [{"timestamp": ago(hours=1), "action": "auto_fix", "success": True}] * 5
    assert actions(replace(HEALTHY, logs={"data_quality": fixes}))["data"] == "ok"


def test_repeated_rollbacks_still_roll_back_but_escalate_and_stop_new_candidates() -> None:
    rollbacks = [{"timestamp": ago(hours=h), "action": "auto_rollback", "success": True} for h in (1, 5)]
    obs = replace(HEALTHY, verdict=FAILED, candidate="c" * 32, monitored="c" * 32, changed=("data/raw/housing.csv",), drift=DRIFT,
                  logs={"model": rollbacks})
    decisions = plan(obs, params())
    pairs = [(d.step, d.action) for d in decisions]
    assert ("model", "rollback") in pairs and ("model", "escalate") in pairs
    assert ("data", "escalate") in pairs and ("drift", "escalate") in pairs
    assert "automatic rollbacks" in next(d.reason for d in decisions if d.step == "drift")
    # manual rollbacks are the user's choice, not a loop
    manual = [{**e, "action": "manual_rollback"} for e in rollbacks]
    assert actions(replace(obs, logs={"model": manual}))["drift"] == "retrain"
    # a corrupted model is restored all the same
    restored = [(d.step, d.action) for d in plan(replace(obs, verdict=PASSED, altered=(CORRUPTED,)), params())]
    assert ("model", "restore") in restored and ("model", "escalate") in restored


def test_constant_drift_escalates_after_three_retrains() -> None:
    retrains = [{"timestamp": ago(days=d), "action": "auto_retrain", "success": True} for d in (1, 2, 3)]
    obs = replace(HEALTHY, drift=DRIFT, logs={"drift": retrains})
    d = plan(obs, params())[3]
    assert d.action == "escalate" and "still detected after 3 retrains" in d.reason
    assert "drift" not in escalations(replace(obs, drift=NO_DRIFT), params())


def test_recovery_exhausted_escalates_until_a_success() -> None:
    failed = [{"timestamp": ago(minutes=m), "success": False, "attempt": n, "detected_at": ago(minutes=10)}
              for n, m in ((1, 9), (2, 8), (3, 7))]
    down = replace(HEALTHY, service={"state": "down", "detail": "refused"})
    assert plan(replace(down, logs={"service": failed}), params())[4].action == "escalate"
    recovered = [*failed, {"timestamp": ago(minutes=1), "success": True, "detected_at": ago(minutes=2)}]
    assert actions(replace(down, logs={"service": recovered}))["service"] == "recover"
    assert actions(replace(down, logs={"service": failed[:2]}))["service"] == "recover"


def test_entries_with_bad_timestamps_are_ignored() -> None:
    junk = [{"timestamp": "yesterday", "action": "auto_rollback", "success": True}] * 5
    assert escalations(replace(HEALTHY, logs={"model": junk}), params()) == {}


def test_escalation_thresholds_come_from_params() -> None:
    fixes = [{"timestamp": ago(hours=h), "action": "auto_fix", "success": True} for h in (1, 2, 3, 4)]
    obs = replace(HEALTHY, changed=("data/raw/housing.csv",), logs={"data_quality": fixes})
    assert actions(obs, params(escalation={"max_same_issue": 4}))["data"] == "repro"
    d = plan(obs, params(escalation={"window_hours": 2.5, "max_same_issue": 1}))[0]
    assert d.action == "escalate" and "2 times in 2.5 h (more than 1)" in d.reason
    rollbacks = [{"timestamp": ago(hours=h), "action": "auto_rollback", "success": True} for h in (1, 5)]
    assert "model" not in escalations(replace(HEALTHY, logs={"model": rollbacks}), params(escalation={"max_auto_rollbacks": 3}))
    retrains = [{"timestamp": ago(days=d), "action": "auto_retrain", "success": True} for d in (1, 2, 3)]
    drifting = replace(HEALTHY, drift=DRIFT, logs={"drift": retrains})
    assert "drift" not in escalations(drifting, params(escalation={"drift_window_days": 2.5}))
    assert "after 2 retrains in 2.5 days" in escalations(drifting, params(escalation={"drift_window_days": 2.5,
                                                                                     "drift_retrains": 2}))["drift"]


def test_escalation_rules_are_read_for_every_project_kind() -> None:
    guarded = {"model": {"artifact": "m", "outs": ["m.pkl"], "stages": ["train"]}, "gate": {"metrics": "m.json", "key": "a"}}
    assert settings(parse(guarded)).escalation == params().escalation
    assert settings(parse({**guarded, "escalation": {"max_same_issue": 1}})).escalation.max_same_issue == 1


def test_escalation_defaults_are_the_seeds_numbers() -> None:
    esc = params().escalation
    assert load(Path(__file__).resolve().parents[2] / "selfheal.yaml").escalation == esc  # listed there too
    assert (esc.window_hours, esc.max_same_issue, esc.max_auto_rollbacks, esc.drift_retrains, esc.drift_window_days) == (
        24, 3, 2, 3, 7)


# --- monitoring must describe the model that serves ---

NEW = {**PASSED, "model_md5": "n" * 32}


@pytest.mark.parametrize(("drift", "drift_md5", "why"), [
    (None, None, "missing or unreadable"), (NO_DRIFT, "o" * 32, "describes model oooooooooooo, not the current model")])
def test_missing_or_stale_monitoring_is_repaired_never_healthy(drift, drift_md5, why: str) -> None:
    obs = replace(HEALTHY, drift=drift, monitored=drift_md5, drift_path="metrics/drift.json")
    decisions = {d.step: d for d in plan(obs, params())}
    assert decisions["monitor"].action == "run_monitor" and why in decisions["monitor"].reason
    assert decisions["monitor"].reason.startswith("metrics/drift.json ")
    assert decisions["drift"].action == "skip"  # a stale report is no reason to retrain (or not to)


def test_no_promotion_while_monitoring_is_stale() -> None:
    d = {d.step: d for d in plan(replace(HEALTHY, verdict=NEW, candidate="n" * 32), params())}
    assert d["monitor"].action == "run_monitor"
    assert d["model"].action == "report" and "not promoted until drift is measured" in d["model"].reason


def test_monitoring_waits_for_the_gate_to_replace_a_bad_or_foreign_model() -> None:
    failed = replace(HEALTHY, verdict=FAILED, candidate="c" * 32)
    assert actions(failed)["monitor"] == "skip" and actions(failed)["model"] == "rollback"
    assert actions(replace(HEALTHY, altered=(CORRUPTED,), drift=None))["monitor"] == "skip"
    assert actions(replace(HEALTHY, changed=("data/raw/housing.csv",), drift=None))["monitor"] == "skip"  # dvc repro measures it


# --- a model whose inputs changed is a person's decision ---

def test_schema_change_escalates_instead_of_promoting_or_rolling_back() -> None:
    changed = {**NEW, "passed": False, "passed_except_schema": True,
               "schema_changes": ["column 'HouseAge' was numeric, now categorical"]}
    d = {d.step: d for d in plan(replace(HEALTHY, verdict=changed, candidate="n" * 32), params())}
    assert d["model"].action == "escalate"
    assert "column 'HouseAge' was numeric, now categorical" in d["model"].reason
    assert "selfheal promote --accept-schema-change" in d["model"].reason
    # a schema change on a model that also fails on quality is rolled back as any failed model
    # a schema change on a model that also fails on quality is rolled back as any failed model, and escalated:
    # the data changed shape, which no rollback repairs
    bad = {**changed, "passed_except_schema": False, "failures": ["r2 0.500 below threshold 0.700"]}
    gate = [d for d in plan(replace(HEALTHY, verdict=bad, candidate="n" * 32), params()) if d.step == "model"]
    assert [d.action for d in gate] == ["rollback", "escalate"]
    assert "r2 0.500 below threshold 0.700" in gate[0].reason
    assert "column 'HouseAge' was numeric, now categorical" in gate[1].reason


def test_drift_after_retraining_on_this_very_batch_is_explained_not_retrained_again() -> None:
    """The reference now mixes old data and the batch; another retrain would fold nothing new."""
    obs = replace(HEALTHY, drift=DRIFT, last_retrain=NOW - timedelta(hours=30))
    assert actions(obs)["drift"] == "retrain"
    (d,) = [d for d in plan(replace(obs, batch_retrained="v0.0.3 was already trained on this batch (housing.csv): retraining would fold nothing new. The drift reference now mixes the old training data with this batch"), params()) if d.step == "drift"]
    assert d.action == "report" and "v0.0.3 was already trained on this batch" in d.reason
    assert "mixes the old training data with this batch" in d.reason


def test_what_the_watcher_refused_heal_refuses_until_acknowledged() -> None:
    down = {"state": "down", "detail": "connection refused"}
    storm = {"service": "the watcher stopped restarting it (restart storm)"}
    decided = next(d for d in plan(replace(HEALTHY, service=down, escalated=storm), params()) if d.step == "service")
    assert decided.action == "escalate" and "restart storm" in decided.reason
    assert "`selfheal acknowledge service`" in decided.reason
    assert actions(replace(HEALTHY, service=down))["service"] == "recover"  # acknowledged: recovered again


# --- the same policy for a project guarded through selfheal.yaml (its sections' settings) ---

GUARDED = Settings(stage="prod")  # selfheal.yaml defaults: no fix stage, auto-rollback on
CANDIDATE = {"metric_name": "avg_prec.test", "metric": 0.91, "passed": True, "failures": []}


def test_a_guarded_project_without_drift_or_service_has_only_data_and_model_steps() -> None:
    obs = Observations(now=NOW, candidate="p" * 32, production=PROD)
    assert [(d.step, d.action) for d in plan(obs, GUARDED)] == [("data", "ok"), ("model", "ok")]


def test_a_failed_build_is_refused_until_an_input_changes() -> None:
    failed = {"error": "evaluate exited 1", "attempts": 2}
    d = plan(Observations(now=NOW, failed_build=failed, candidate="p" * 32, production=PROD), GUARDED)[0]
    assert d.action == "refuse" and "failed to build 2 time(s) (evaluate exited 1)" in d.reason
    moved = Observations(now=NOW, failed_build=failed, inputs_moved=("params.yaml",), candidate="p" * 32,
                         production=PROD)
    assert plan(moved, GUARDED)[0].action == "repro"


def test_edited_params_build_a_candidate_unless_the_gate_rejected_exactly_them() -> None:
    obs = Observations(now=NOW, edited_params=("params.yaml:train.n_est",), candidate="p" * 32, production=PROD)
    assert plan(obs, GUARDED)[0].action == "repro"
    d = plan(replace(obs, params_rejected=True), GUARDED)[0]
    assert d.action == "report" and "failed the gate and was rolled back" in d.reason


def test_data_faults_are_fixed_and_a_bad_data_setting_is_refused() -> None:
    obs = Observations(now=NOW, faulty=("data/data.csv (4 change(s) to make)",), candidate="p" * 32, production=PROD)
    assert plan(obs, GUARDED)[0].action == "fix"
    d = plan(replace(obs, data_error="target column 'labels' not found"), GUARDED)[0]
    assert d.action == "refuse" and "labels" in d.reason
    left = Observations(now=NOW, faults_left=("data/data.csv: 3 missing values",), candidate="p" * 32,
                        production=PROD)
    d = plan(left, GUARDED)[0]
    assert d.action == "report" and "data.quality.auto_fix_enabled is false" in d.reason


def test_a_candidate_is_promoted_or_rolled_back_on_the_configured_metric() -> None:
    obs = Observations(now=NOW, candidate="n" * 32, production=PROD, verdict=CANDIDATE)
    assert {d.step: d.action for d in plan(obs, GUARDED)}["model"] == "promote"
    worse = {**CANDIDATE, "passed": False, "failures": ["avg_prec.test 0.5000 is 40.0% worse than production"]}
    d = {d.step: d for d in plan(replace(obs, verdict=worse), GUARDED)}["model"]
    assert d.action == "rollback" and "40.0% worse" in d.reason


def test_a_service_heal_cannot_restart_is_refused_and_one_the_watcher_recovers_is_left_to_it() -> None:
    down = {"state": "down", "detail": "http://127.0.0.1:8080/health refused"}
    obs = Observations(now=NOW, candidate="p" * 32, production=PROD, service=down, restartable=False)
    d = {d.step: d for d in plan(obs, GUARDED)}["service"]
    assert d.action == "refuse" and "service.start is not set" in d.reason
    d = {d.step: d for d in plan(replace(obs, restartable=True, watcher=4242), GUARDED)}["service"]
    assert d.action == "skip" and "running watcher (pid 4242)" in d.reason


def test_drift_that_cannot_be_measured_is_refused_not_healthy() -> None:
    obs = Observations(now=NOW, candidate="p" * 32, production=PROD, drift_error="drift: data/current.csv: not found")
    d = {d.step: d for d in plan(obs, GUARDED)}["drift"]
    assert d.action == "refuse" and "not found" in d.reason
