"""The gate: the validate stage's verdict on a candidate, judged again against production (the registry's).

Our pipeline's validate stage judges a candidate on its own (threshold, gain over a trivial baseline, degenerate
output), so its outputs depend only on its declared deps; any other DVC project names a metrics file, a key, a
direction and an absolute bound in selfheal.yaml. What depends on production is judged here, at the moment of
promoting, against whatever the registry says production is then: how much worse the candidate's metric is
than production's (relative to its size), and whether its input columns are production's (its clients would
get 422 otherwise).

Like with like: when the candidate was evaluated on the very data production was (the evaluating stage's data
deps - its inputs but the model and code - pin the same md5s in both dvc.lock files), no drop at all is
allowed: a model worse on the same holdout is worse. The relative allowance is for new evaluation data, where
the two scores are not comparable to the last digit. The verdict says which case it judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import CODE_SUFFIXES, Project, dig, parse_metrics
from selfheal.versions import vcs
from selfheal.versions.catalog import Versions
from selfheal.versions.registry import Version


def input_schema(features: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What a client must send: each feature's name and kind (categories may grow; unseen ones are tolerated)."""
    return [{"name": str(f["name"]), "kind": str(f["kind"])} for f in features]


def schema_changes(features: list[dict[str, Any]], production: dict[str, Any]) -> list[str]:
    """How the model's input columns differ from production's recorded ones (`features` in its version tag);
    [] when they match or production records none (registered by another tool: nothing to compare)."""
    recorded = production.get("features")
    if not isinstance(recorded, list):
        return []
    old = {f["name"]: f["kind"] for f in input_schema(recorded)}
    new = {f["name"]: f["kind"] for f in input_schema(features)}
    removed, added = [n for n in old if n not in new], [n for n in new if n not in old]
    changes = [f"column {n!r} was {old[n]}, now {new[n]}" for n in old if n in new and old[n] != new[n]]
    if removed:
        changes.append(f"column(s) {removed} no longer taken")
    if added:
        changes.append(f"new column(s) {added}")
    return changes


def _schema_reason(changes: list[str], production: dict[str, Any]) -> str:
    version = production["version"]
    if changes:
        return (f"input schema differs from production {version}: {'; '.join(changes)} (its clients would get 422; "
                "`selfheal promote --accept-schema-change` accepts it)")
    if not isinstance(production.get("features"), list):
        return f"production {version} records no input schema: not compared"
    return f"input columns and types match production {version}"


def against_production(name: str, metric: float, max_relative_drop: float, production: dict[str, Any],
                       case: str | None = None) -> tuple[bool, str, float | None]:
    """(passed, reason, relative drop) versus the production version's recorded metric; `case` says why the
    allowance is what it is (the same evaluation data: none)."""
    version, prod = production["version"], production.get("metric")
    if production.get("metric_name", name) != name or not isinstance(prod, (int, float)):
        return True, f"production {version} has no recorded {name}: no comparison", None
    # relative to the production metric's size (R2 can be negative); a production metric of 0 compares absolutely
    drop = (prod - metric) / (abs(prod) or 1.0)
    change = f"improved {-drop:.1%}" if drop < 0 else f"dropped {drop:.1%}"
    reason = (f"{name} {metric:.3f} {change} versus production {version} ({prod:.3f}), "
              + (case or f"max {max_relative_drop * 100:g}%"))
    return drop <= max_relative_drop, reason, drop


def evaluation_data(lock: dict[str, Any], project: Project) -> dict[str, str]:
    """{path: md5} of what the stage writing the gate's metrics evaluated on: its deps but the model and code."""
    stage = next((entry for entry in lock.values() if workspace.inside(project.gate.metrics, vcs.hashes(entry))),
                 None)
    if stage is None:
        return {}
    model = set(project.model.outs)
    return {path: md5 for path, md5 in vcs.hashes(stage, "deps").items()
            if path not in model and not path.endswith(CODE_SUFFIXES) and md5}


def same_data(project: Project, cwd: Path, versions: Versions, production: Version | None) -> str | None:
    """The evaluation data the candidate and production share (a comma-separated list), None when it differs or
    cannot be told (no production, no evaluating stage in a lock)."""
    if production is None:
        return None
    now = evaluation_data(vcs.read_lock(cwd / workspace.DVC_LOCK), project)
    return ", ".join(sorted(now)) if now and now == evaluation_data(versions.lock(production), project) else None


def _allowance(allowed: float, shared: str | None) -> tuple[float, str | None]:
    """The drop allowed, and why when none is: the candidate was evaluated on production's very data."""
    if shared:
        return 0.0, f"no drop allowed: same evaluation data as production ({shared})"
    return allowed, None


def judge(validation: dict[str, Any], production: dict[str, Any] | None, max_relative_drop: float,
          features: list[dict[str, Any]] | None, shared: str | None = None) -> dict[str, Any]:
    """The stage's own verdict with the production checks added. `passed`: every check passed;
    `passed_except_schema` tells a good model whose inputs changed (a person decides) from a bad one."""
    own_passed = bool(validation.get("passed"))
    reasons, failures = list(validation.get("reasons") or []), list(validation.get("failures") or [])
    relative_drop, changes = None, []
    passed = own_passed
    metric = validation.get("metric")
    if production is None:
        reasons.append("no production model to compare with")
    else:
        if isinstance(metric, (int, float)) and metric == metric:  # not NaN: an undefined metric already failed
            allowed, case = _allowance(max_relative_drop, shared)
            ok, reason, relative_drop = against_production(str(validation.get("metric_name")), float(metric),
                                                           allowed, production, case)
            reasons.append(reason)
            if not ok:
                failures.append(reason)
                passed = False
        if features is not None:
            changes = schema_changes(features, production)
            reasons.append(_schema_reason(changes, production))
            if changes:
                failures.append(reasons[-1])
    return {
        **validation,
        "passed": passed and not changes,
        "passed_except_schema": passed,
        "schema_changes": changes,
        "reasons": reasons,
        "failures": failures,
        "max_relative_drop": max_relative_drop,
        "production_version": production["version"] if production else None,
        "production_metric": production.get("metric") if production else None,
        "relative_drop": relative_drop,
    }


def _own_pipeline(cwd: Path, production: dict[str, Any] | None, shared: str | None) -> dict[str, Any] | None:
    """Our pipeline's verdict: the validate stage's record (threshold, baseline gain, degenerate output), judged
    against production's metric and input schema; None before the pipeline validated a model."""
    from selfheal.core.config import load_params

    validation = atomic.read_json(cwd / workspace.VALIDATION)
    if not isinstance(validation, dict):
        return None
    meta = atomic.read_json(cwd / workspace.MODEL_META, {}) or {}
    features = meta.get("features") if meta.get("md5") == validation.get("model_md5") else None
    drop = load_params(cwd / workspace.PARAMS).model_validation.max_relative_drop
    return judge(validation, production, drop, features if isinstance(features, list) else None, shared)


def _metric_gate(project: Project, cwd: Path, production: dict[str, Any] | None,
                 production_metric: float | None, shared: str | None) -> dict[str, Any]:
    """Any DVC project's verdict: the configured metric against the absolute bound, then against production's."""
    gate = project.gate
    path = cwd / gate.metrics
    if not path.is_file():
        raise SelfHealError(f"{gate.metrics}: not found; run `dvc repro` so the candidate is evaluated")
    metric = dig(parse_metrics(path.read_bytes(), gate.metrics), gate.key, gate.metrics)
    worse = (lambda a, b: a < b) if gate.direction == "max" else (lambda a, b: a > b)
    checks: list[tuple[bool, str]] = []
    if gate.bound is not None:
        word = ("below" if gate.direction == "max" else "above") if worse(metric, gate.bound) else "within"
        checks.append((not worse(metric, gate.bound), f"{gate.key} {metric:.4f} {word} bound {gate.bound:g}"))
    relative = None
    allowed, case = _allowance(gate.max_relative_change, shared)
    if production is not None and production_metric is not None and production_metric != 0:
        relative = ((production_metric - metric if gate.direction == "max" else metric - production_metric)
                    / abs(production_metric))
        change = f"{relative:.1%} worse than" if relative > 0 else f"{-relative:.1%} better than"
        checks.append((relative <= allowed, f"{gate.key} {metric:.4f} is {change} production "
                                            f"{production['version']} {production_metric:.4f} "
                                            f"({case or f'max {allowed:.0%} worse'})"))
    elif production is None:
        checks.append((True, "no production model to compare with"))
    elif production_metric is None:
        checks.append((True, f"production {production['version']}'s {gate.key} is unknown (its outputs are not "
                             "reachable and its tag does not record it): not compared"))
    passed = all(ok for ok, _ in checks)
    return {"metric_name": gate.key, "metric": metric, "threshold": gate.bound, "passed": passed,
            "passed_except_schema": passed, "schema_changes": [], "reasons": [r for _, r in checks],
            "failures": [r for ok, r in checks if not ok], "max_relative_drop": allowed,
            "production_version": production["version"] if production else None,
            "production_metric": production_metric, "relative_drop": relative}


def judged(versions: Versions) -> dict[str, Any] | None:
    """The verdict on the workspace candidate against the registry's production now (see `verdict`)."""
    return verdict(versions.project, versions.cwd, versions, versions.production())


def verdict(project: Project, cwd: Path, versions: Versions, production: Version | None) -> dict[str, Any] | None:
    """The gate's verdict on the workspace candidate against `production` (None: the first version), one
    interface for every project kind: our pipeline's richer verdict, or the configured dotted-key metric."""
    record = versions.record(production) if production else None
    shared = same_data(project, cwd, versions, production)
    if project.kind == "selfheal":
        return _own_pipeline(cwd, record, shared)
    return _metric_gate(project, cwd, record, versions.metric(production) if production else None, shared)
