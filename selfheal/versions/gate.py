"""The gate: the validate stage's verdict on a candidate, judged again against production (the registry's).

The validate stage judges a candidate on its own (threshold, gain over a trivial baseline, degenerate output),
so its outputs depend only on its declared deps. What depends on production is judged here, at the moment of
promoting, against whatever the registry says production is then: how much worse the candidate's metric is
than production's (relative to its size), and whether its input columns are production's (its clients would
get 422 otherwise).
"""

from __future__ import annotations

from typing import Any


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


def against_production(name: str, metric: float, max_relative_drop: float,
                       production: dict[str, Any]) -> tuple[bool, str, float | None]:
    """(passed, reason, relative drop) versus the production version's recorded metric."""
    version, prod = production["version"], production.get("metric")
    if production.get("metric_name", name) != name or not isinstance(prod, (int, float)):
        return True, f"production {version} has no recorded {name}: no comparison", None
    # relative to the production metric's size (R2 can be negative); a production metric of 0 compares absolutely
    drop = (prod - metric) / (abs(prod) or 1.0)
    change = f"improved {-drop:.1%}" if drop < 0 else f"dropped {drop:.1%}"
    reason = (f"{name} {metric:.3f} {change} versus production {version} ({prod:.3f}), "
              f"max {max_relative_drop * 100:g}%")
    return drop <= max_relative_drop, reason, drop


def judge(validation: dict[str, Any], production: dict[str, Any] | None, max_relative_drop: float,
          features: list[dict[str, Any]] | None) -> dict[str, Any]:
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
            ok, reason, relative_drop = against_production(str(validation.get("metric_name")), float(metric),
                                                           max_relative_drop, production)
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
