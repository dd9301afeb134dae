"""`selfheal init`: find what a DVC project already declares and write the selfheal.yaml that guards it.

Discovered: dvc.yaml `artifacts:` of type model and their paths, the stages that produce them, the declared
metrics files (top-level and per stage) and their numeric keys, the existing GTO versions and stages. What
cannot be discovered (the bound a metric must meet) is printed as a choice left to the user; nothing is asked
unless `interactive`. An existing selfheal.yaml is never overwritten without `force`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import DATA_FORMATS, PROJECT_FILE, RECORDS, Project, numeric_keys, parse, parse_metrics
from selfheal.versions import registry, vcs

Ask = Callable[[str, str], str]  # (question, default) -> answer
_MINIMISE = re.compile(r"loss|err|rmse|mse|mae|mape|perplexity|latency", re.IGNORECASE)
# a stage's own code: a change to it reruns the stage, but it is not data a new candidate is made from
_CODE = (".py", ".r", ".R", ".sh", ".ipynb", ".jl", ".scala", ".java", ".js", ".ts", ".sql", ".toml", ".cfg")


class InitError(SelfHealError):
    exit_code = 1


@dataclass
class Found:
    artifact: str
    path: str
    artifacts: list[str]
    stages: list[str]
    metrics: dict[str, dict[str, float]]  # file -> {dotted key: value}
    key: str
    metrics_file: str
    versions: list[str] = field(default_factory=list)
    gto_stages: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)  # input files no stage produces (any format)
    data_dirs: list[str] = field(default_factory=list)  # input directories no stage produces


def _paths(items: list[Any] | None) -> list[str]:
    """Paths of a dvc.yaml outs/metrics/plots list (plain strings or {path: options})."""
    return [str(next(iter(i))) if isinstance(i, dict) else str(i) for i in items or []]


def _produces(stage: dict[str, Any], path: str) -> bool:
    outs = _paths(stage.get("outs")) + _paths(stage.get("metrics")) + _paths(stage.get("plots"))
    return any(path == o or Path(o) in Path(path).parents for o in outs)


def _stages(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    stages = doc.get("stages") or {}
    if any("foreach" in s or "matrix" in s for s in stages.values() if isinstance(s, dict)):
        raise InitError("dvc.yaml uses foreach/matrix stages; write selfheal.yaml by hand (see docs/guarding.md)")
    return {name: s for name, s in stages.items() if isinstance(s, dict)}


def discover(cwd: Path, artifact: str | None = None) -> Found:
    """Everything init can learn from dvc.yaml, the workspace metrics and the git tags; errors say what to add."""
    if not (cwd / ".dvc").is_dir() or not (cwd / workspace.DVC_YAML).is_file():
        raise InitError("no DVC pipeline here (.dvc/ and dvc.yaml are needed): run `dvc init` and declare your "
                        "stages in dvc.yaml, then `selfheal init` again")
    doc = yaml.safe_load((cwd / workspace.DVC_YAML).read_text(encoding="utf-8")) or {}
    models = {name: a for name, a in (doc.get("artifacts") or {}).items()
              if isinstance(a, dict) and a.get("type") == "model" and a.get("path")}
    if not models:
        raise InitError("dvc.yaml has no artifact of type model: add `artifacts: {<name>: {path: <model file or "
                        "directory>, type: model}}` to dvc.yaml, then `selfheal init` again")
    if artifact is not None and artifact not in models:
        raise InitError(f"dvc.yaml has no model artifact {artifact!r}; model artifacts: {', '.join(models)}")
    name = artifact or next(iter(models))
    path = str(models[name]["path"]).rstrip("/")
    stages = _stages(doc)
    producer = next((s for s, st in stages.items() if _produces(st, path)), None)
    if producer is None:
        raise InitError(f"dvc.yaml: no stage has {path} (artifact {name}) in its outs; selfheal restores stage "
                        "outputs, so declare it as an output of the stage that trains it")
    declared = _paths(doc.get("metrics")) + [m for st in stages.values() for m in _paths(st.get("metrics"))]
    metrics: dict[str, dict[str, float]] = {}
    for file in dict.fromkeys(declared):
        target = cwd / file
        if target.is_file():
            try:
                keys = numeric_keys(parse_metrics(target.read_bytes(), file))
            except SelfHealError:
                continue
            if keys:
                metrics[file] = keys
    if not metrics:
        what = ", ".join(declared) if declared else "none declared"
        raise InitError(f"no numeric metric found (metrics files: {what}): declare a JSON/YAML metrics file under "
                        "`metrics:` in dvc.yaml and run `dvc repro` so it exists, then `selfheal init` again")
    metrics_file = next(iter(metrics))
    names = list(metrics[metrics_file])
    key = next((k for k in names if "test" in k.split(".")), names[0])
    version_stages = [producer]
    evaluator = next((s for s, st in stages.items() if _produces(st, metrics_file)), None)
    if evaluator and evaluator not in version_stages:
        version_stages.append(evaluator)
    known = registry.versions(cwd, name)
    gto_stages = sorted({t.split("#")[1] for t in vcs.git("tag", "--list", f"{name}#*", cwd=cwd).split()
                         if t.count("#") == 2})
    made = {o for st in stages.values() for o in _paths(st.get("outs"))}
    inputs = [d.rstrip("/") for st in stages.values() for d in _paths(st.get("deps"))
              if not any(d.rstrip("/") == o or Path(o) in Path(d).parents for o in made)]
    inputs = [d for d in dict.fromkeys(inputs) if not d.endswith(_CODE) and d not in (str(workspace.PARAMS),)]
    return Found(name, path, list(models), version_stages, metrics, key, metrics_file,
                 [v.name for v in known], gto_stages, [d for d in inputs if not (cwd / d).is_dir()],
                 [d for d in inputs if (cwd / d).is_dir()])


def build(found: Found, ask: Ask | None = None) -> Project:
    """The configuration from what was found (and, with `ask`, the user's answers)."""
    key, metrics_file = found.key, found.metrics_file
    if ask is not None:
        choices = [f"{f}:{k}" for f, keys in found.metrics.items() for k in keys]
        answer = ask(f"gate metric ({', '.join(choices)})", f"{metrics_file}:{key}")
        metrics_file, _, key = answer.rpartition(":") if ":" in answer else (metrics_file, "", answer)
    direction = "min" if _MINIMISE.search(key) else "max"
    bound: float | None = None
    stage = "prod"
    if ask is not None:
        direction = ask("direction (max or min)", direction)
        text = ask("absolute bound (empty: none)", "")
        bound = float(text) if text.strip() else None
        stage = ask("GTO stage that means production", stage)
    raw: dict[str, Any] = {
        "kind": "dvc",
        "model": {"artifact": found.artifact, "outs": [found.path], "stages": found.stages},
        "gate": {"metrics": metrics_file, "key": key, "direction": direction, "bound": bound,
                 "max_relative_change": 0.05, "stage": stage},
        "repro": {"target": found.stages[-1]},
        "records": str(RECORDS),
    }
    if found.data:
        fixable = [d for d in found.data if d.endswith(DATA_FORMATS)]
        raw["data"] = {"deps": [d for d in found.data if d not in fixable], "fix": fixable}
    return parse(raw, "selfheal init")


HEADER = """# selfheal.yaml: what `selfheal heal` guards in this DVC project (docs/guarding.md lists every key).
# Written by `selfheal init`; edit freely. selfheal never reads this project's params.yaml.
"""

OPTIONAL = """
# Optional, left for you to choose (docs/guarding.md):
# drift:                             # compare a new batch with the data the model learnt from; retrain on drift
#   reference: data/train.csv
#   current: data/new_batch.csv
#   drift_threshold: 0.5             # share of drifted columns that means drift
# service:                           # keep the model's service up: `selfheal recover [--watch]`, heal's service step
#   health: http://127.0.0.1:8080/health
#   start: python serve.py --port {port}
#   reload: http://127.0.0.1:8080/reload
"""


def render(project: Project) -> str:
    doc = project.model_dump(exclude_none=True)
    doc["gate"].setdefault("bound", None)  # shown, so the choice left to the user is visible
    if "data" in doc:
        doc["data"] = {k: v for k, v in doc["data"].items() if v and k != "quality"}  # quality: the defaults
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    body = body.replace("  bound: null\n", "  bound: null  # choose: the value the metric must meet\n")
    return HEADER + body.replace("  fix:\n", "  fix:  # checked and fixed in place before a candidate is made\n") + OPTIONAL


def report(found: Found, project: Project, cwd: Path, answered: bool = False) -> list[str]:
    """What init found and wrote, and what is left to choose (`answered`: the gate was chosen interactively)."""
    gate = project.gate
    lines = [
        f"found model artifact {found.artifact} at {found.path}"
        + (f" (others: {', '.join(a for a in found.artifacts if a != found.artifact)}; pick with --artifact)"
           if len(found.artifacts) > 1 else ""),
        f"found version stages {', '.join(found.stages)} (restored together on rollback)",
        *(f"found metrics {f}: {', '.join(f'{k}={v:.4g}' for k, v in keys.items())}" for f, keys in found.metrics.items()),
        f"found GTO versions: {', '.join(found.versions) or 'none'}; stages: {', '.join(found.gto_stages) or 'none'}",
        f"gate: {gate.metrics} {gate.key}, {gate.direction}imise, at most {gate.max_relative_change:.0%} worse than "
        f"stage {gate.stage}",
    ]
    if found.data:
        lines.append(f"found data deps {', '.join(found.data)} (a change makes heal reproduce a candidate)")
    if found.data_dirs:
        lines.append(f"found data directories {', '.join(found.data_dirs)}: not watched (selfheal compares files "
                     "with dvc.lock; name the files a candidate is made from in data.deps)")
    if project.data and project.data.fix:
        lines.append(f"data.fix: {', '.join(project.data.fix)} are checked and fixed in place (backup first); "
                     "set data.target to a label column, if any, so it is never filled or capped")
    lines.append("drift: and service: are not set (see the commented example at the end of selfheal.yaml)")
    todo = []
    if gate.bound is None:
        todo.append("gate.bound (the absolute value the metric must meet; none set)")
    if gate.stage not in found.gto_stages:
        todo.append(f"gate.stage: no {gate.stage!r} assignment yet; the first candidate that passes becomes it")
    if not answered:
        qualifying = [f"{f}:{k}" for f, keys in found.metrics.items() for k in keys]
        others = [q for q in qualifying if q != f"{gate.metrics}:{gate.key}"]
        todo.append(f"the gate key and direction: {gate.key} ({gate.direction}) was guessed"
                    + (f" among {len(qualifying)} numeric keys ({', '.join(others)} also qualify): set gate.metrics "
                       "and gate.key, or run `selfheal init --interactive --force`" if others else ""))
    lines += [f"still to choose: {t}" for t in todo]
    return lines


def ignore_records(project: Project, cwd: Path) -> str | None:
    """Add the records folder to .gitignore (selfheal's logs and locks are no project file); the line to print,
    or None when it was already ignored."""
    ignore = cwd / ".gitignore"
    text = ignore.read_text(encoding="utf-8") if ignore.exists() else ""
    entry = f"/{project.records.strip('/')}/"
    if entry in text.split() or f"{project.records.strip('/')}/" in text.split():
        return None
    atomic.write_text(ignore, text + ("" if not text or text.endswith("\n") else "\n")
                      + f"# selfheal's records (logs, locks, backups)\n{entry}\n")
    return f"added {entry} to .gitignore (selfheal's records)"


def init(cwd: Path = Path("."), *, force: bool = False, artifact: str | None = None,
         ask: Ask | None = None) -> list[str]:
    """Discover, write selfheal.yaml, and return the lines to print."""
    target = cwd / PROJECT_FILE
    if target.exists() and not force:
        raise InitError(f"{PROJECT_FILE} exists; pass --force to overwrite it")
    found = discover(cwd, artifact)
    project = build(found, ask)
    atomic.write_text(target, render(project))
    ignored = ignore_records(project, cwd)
    unreachable = _unreachable(project, cwd)
    return [*report(found, project, cwd, answered=ask is not None), *([ignored] if ignored else []),
            *(f"warning: {v}'s outputs are in no cache and no remote this clone can read: it is listed, never "
              "restored" for v in unreachable), f"wrote {PROJECT_FILE}"]


def _unreachable(project: Project, cwd: Path) -> list[str]:
    """The registered versions whose outputs cannot be restored here."""
    from selfheal.versions.catalog import Versions

    versions = Versions(project, cwd)
    return [v.tag for v in versions.known if not versions.reachable(v)]
