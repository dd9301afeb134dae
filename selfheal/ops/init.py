"""`selfheal init`: find what a DVC project already declares and write the selfheal.yaml that guards it.

Discovered: dvc.yaml `artifacts:` of type model and their paths, the stages that produce them, the declared
metrics files (top-level and per stage) and their numeric keys, the existing GTO versions and stages. What
cannot be discovered (the bound a metric must meet) is printed as a choice left to the user; nothing is asked
unless `interactive`. An existing selfheal.yaml is never overwritten without `force`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selfheal.core import atomic, workspace
from selfheal.core.errors import SelfHealError
from selfheal.core.project import (
    CODE_SUFFIXES,
    DATA_FORMATS,
    PROJECT_FILE,
    READABLE,
    RECORDS,
    Project,
    at_key,
    numeric_keys,
    parse,
    parse_metrics,
    project_file,
)
from selfheal.versions import registry, vcs

Ask = Callable[[str, str], str]  # (question, default) -> answer
_MINIMISE = re.compile(r"loss|err|rmse|mse|mae|mape|perplexity|latency", re.IGNORECASE)
# a size of the model or of its training: set to 1, the candidate is far weaker (the drill's bad candidate)
_SIZE = re.compile(r"^(n_est|n_estimators|n_trees|num_trees|max_iter|n_iter|iterations|epochs|n_epochs|num_epochs|"
                   r"num_boost_round|num_rounds|max_depth|num_leaves|hidden_size|hidden_units|units)$", re.IGNORECASE)


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
    declared: bool = True  # the model is an `artifacts:` entry of dvc.yaml (else inferred from the stages)
    degrade: dict[str, int] = field(default_factory=dict)  # drill.degrade: a param that makes a weak candidate

    @property
    def name(self) -> str:
        """The artifact's name in its dvc.yaml (`artifact` is GTO's `<folder>:<name>` for a pipeline in a folder)."""
        return self.artifact.rpartition(":")[2]


# files and folders that look like a trained model (pickles, torch, keras, onnx, tensorflow, xgboost, catboost...)
MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib", ".sav", ".pt", ".pth", ".ckpt", ".h5", ".hdf5", ".keras", ".onnx",
                  ".pb", ".tflite", ".safetensors", ".bin", ".model", ".cbm", ".ubj", ".mlmodel")


@dataclass
class Pipeline:
    """dvc.yaml as DVC itself resolves it (vars, ${...}, foreach and matrix stages, several params files)."""

    stages: dict[str, vcs.ResolvedStage]
    metrics: list[str]  # every declared metrics file: stage-level and top-level, cached or not
    artifacts: dict[str, str]  # {name: path} of the `artifacts:` of type model


def _read_pipeline(cwd: Path) -> Pipeline:
    """The root dvc.yaml through DVC's API (never parsed by hand); a one-line error when DVC cannot read it."""
    from dvc.repo import Repo

    try:
        stages = vcs.resolved_stages(cwd / workspace.DVC_YAML)
        with Repo(str(cwd.resolve())) as repo:  # its dvc.yaml is keyed by its path in the repository
            key = (cwd.resolve() / workspace.DVC_YAML).relative_to(Path(repo.root_dir).resolve()).as_posix()
            artifacts = {name: a.path for name, a in (repo.artifacts.read().get(key) or {}).items()
                         if a.type == "model" and a.path}
    except SelfHealError as exc:
        raise InitError(str(exc)) from None
    except Exception as exc:  # DVC's own errors reading the artifacts: say which and stop
        raise InitError(f"dvc.yaml: DVC cannot read it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    doc = yaml.safe_load((cwd / workspace.DVC_YAML).read_text(encoding="utf-8")) or {}
    top = [str(next(iter(m))) if isinstance(m, dict) else str(m) for m in doc.get("metrics") or []]
    metrics = [m for st in stages.values() for m in st.metrics] + top
    return Pipeline(stages, list(dict.fromkeys(metrics)), artifacts)


def _degrading(stage: vcs.ResolvedStage, cwd: Path) -> dict[str, int]:
    """A size param of the training stage (n_est, epochs, max_iter, ...) above 1, set to 1: the change the drill
    makes for a bad candidate; {} when none is found (drill.degrade is then the user's to set)."""
    for file, keys in stage.params.items():
        path = cwd / file
        if not file.endswith((".yaml", ".yml")) or not path.is_file():
            continue
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for declared in keys:
            for key, value in _leaves(declared, at_key(doc, declared)):
                if _SIZE.match(key.split(".")[-1]) and type(value) is int and value > 1:
                    return {key if file == str(workspace.PARAMS) else f"{file}:{key}": 1}
    return {}


def _leaves(key: str, value: object) -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every scalar under `key`: a stage may declare a whole group (`params: [train]`)."""
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _leaves(f"{key}.{name}", inner)
    else:
        yield key, value


def _produces(stage: vcs.ResolvedStage, path: str) -> bool:
    return workspace.inside(path, stage.outs)


def _looks_like_model(path: str, cwd: Path) -> bool:
    target = cwd / path
    if target.is_dir():
        return (target / "saved_model.pb").is_file() or "model" in target.name.lower()
    return path.lower().endswith(MODEL_SUFFIXES) or "model" in Path(path).stem.lower()


def _name(path: str) -> str:
    """A GTO artifact name from a model's file name: models/rf_model.pkl -> rf_model."""
    name = re.sub(r"[^a-z0-9._-]+", "-", Path(path).stem.lower()).strip("-._") or "model"
    return name if name[0].isalnum() else f"model-{name}"


def _inferred_models(pipeline: Pipeline, cwd: Path) -> dict[str, str]:
    """{name: path} of the outputs that look like a model among the inputs of the stages that write metrics
    (and, failing that, among every stage's outputs upstream of them)."""
    evaluators = [st for st in pipeline.stages.values() if any(_produces(st, m) for m in pipeline.metrics)]
    made = [o for st in pipeline.stages.values() for o in st.outs if o not in pipeline.metrics]
    direct = [o for o in made if any(o in ev.deps for ev in evaluators) and _looks_like_model(o, cwd)]
    found = direct or [o for o in made if _looks_like_model(o, cwd)]
    return {_name(p): p for p in dict.fromkeys(found)}


def discover(cwd: Path, artifact: str | None = None, ask: Ask | None = None) -> Found:
    """Everything init can learn from dvc.yaml, the workspace metrics and the git tags; errors say what to add."""
    if vcs.dvc_root(cwd) is not None and not (cwd / workspace.DVC_YAML).is_file():
        found = sorted(str(p.parent.relative_to(cwd)) for p in cwd.glob(f"**/{workspace.DVC_YAML}")
                       if not {".dvc", ".git", ".selfheal"} & set(p.relative_to(cwd).parts))
        if found:  # a monorepo: each pipeline is guarded from its own folder
            raise InitError(f"no dvc.yaml here, but in {', '.join(f + '/' for f in found[:5])}: run `selfheal init` "
                            "in the folder of the pipeline to guard (each has its own selfheal.yaml)")
    if vcs.dvc_root(cwd) is None or not (cwd / workspace.DVC_YAML).is_file():
        raise InitError("no DVC pipeline here (.dvc/ and dvc.yaml are needed): run `dvc init` and declare your "
                        "stages in dvc.yaml, then `selfheal init` again")
    pipeline = _read_pipeline(cwd)
    models, declared = pipeline.artifacts, bool(pipeline.artifacts)
    if not models:
        models = _inferred_models(pipeline, cwd)
    if not models:
        raise InitError("dvc.yaml has no artifact of type model, and no stage output that feeds the metrics looks "
                        "like one: add `artifacts: {<name>: {path: <model file or directory>, type: model}}` to "
                        "dvc.yaml, then `selfheal init` again")
    if artifact is not None and artifact not in models:
        raise InitError(f"no model artifact {artifact!r}; models: "
                        + ", ".join(f"{n} ({p})" for n, p in models.items()))
    if artifact is None and len(models) > 1:
        listed = ", ".join(f"{n} ({p})" for n, p in models.items())
        if ask is None:
            raise InitError(f"several models: {listed}; pick one with `selfheal init --artifact NAME` (to guard "
                            "each: SELFHEAL_PROJECT=selfheal.NAME.yaml selfheal init --artifact NAME, per model)")
        artifact = ask(f"model to guard ({listed})", next(iter(models)))
        if artifact not in models:
            raise InitError(f"{artifact!r} is none of the models: {listed}")
    name = artifact or next(iter(models))
    path = str(models[name]).rstrip("/")
    folder = vcs.folder(cwd)
    stages = pipeline.stages
    producer = next((s for s, st in stages.items() if _produces(st, path)), None)
    if producer is None:
        raise InitError(f"dvc.yaml: no stage has {path} (artifact {name}) in its outs; selfheal restores stage "
                        "outputs, so declare it as an output of the stage that trains it")
    metrics: dict[str, dict[str, float]] = {}
    for file in pipeline.metrics:
        target = cwd / file
        if target.is_file():
            try:
                keys = numeric_keys(parse_metrics(target.read_bytes(), file))
            except SelfHealError:
                continue
            if keys:
                metrics[file] = keys
    if not metrics:
        what = ", ".join(pipeline.metrics) if pipeline.metrics else "none declared"
        raise InitError(f"no numeric metric found (metrics files: {what}): declare a JSON/YAML metrics file under "
                        "`metrics:` in dvc.yaml and run `dvc repro` so it exists, then `selfheal init` again")
    # the metrics of the stage that evaluates this model, when one reads it
    judging = [f for f in metrics for st in stages.values() if _produces(st, f) and path in st.deps]
    metrics_file = judging[0] if judging else next(iter(metrics))
    names = list(metrics[metrics_file])
    key = next((k for k in names if "test" in k.split(".")), names[0])
    version_stages = [producer]
    evaluator = next((s for s, st in stages.items() if _produces(st, metrics_file)), None)
    if evaluator and evaluator not in version_stages:
        version_stages.append(evaluator)
    full = f"{folder}:{name}" if folder else name  # GTO names a model in a folder's dvc.yaml this way
    known = registry.versions(cwd, full)
    gto_stages = sorted({t.split("#")[1] for t in vcs.git("tag", "--list", f"{registry.in_tag(full)}#*",
                                                          cwd=cwd).split() if t.count("#") == 2})
    made = {o for st in stages.values() for o in st.outs}
    inputs = [d for st in stages.values() for d in st.deps
              if not workspace.inside(d, made)]
    inputs = [d for d in dict.fromkeys(inputs) if not d.endswith(CODE_SUFFIXES) and d != str(workspace.PARAMS)
              and not Path(d).name.startswith("params")]
    return Found(full, path, list(models), version_stages, metrics, key, metrics_file,
                 [v.name for v in known], gto_stages, [d for d in inputs if not (cwd / d).is_dir()],
                 [d for d in inputs if (cwd / d).is_dir()], declared, _degrading(stages[producer], cwd))


def add_artifact(found: Found, cwd: Path) -> str:
    """Write the `artifacts:` entry for the inferred model into dvc.yaml (appended: the file's comments and
    layout stay), so DVC's and GTO's tools see the same model; the line to print."""
    path = cwd / workspace.DVC_YAML
    text = path.read_text(encoding="utf-8")
    doc = yaml.safe_load(text) or {}
    if "artifacts" in doc:
        raise InitError("dvc.yaml already has an artifacts: section: add the model to it by hand "
                        f"({found.name}: {{path: {found.path}, type: model}})")
    entry = yaml.safe_dump({"artifacts": {found.name: {"path": found.path, "type": "model"}}}, sort_keys=False)
    atomic.write_text(path, text + ("" if text.endswith("\n") else "\n") + entry)
    return f"added artifacts: {found.name} ({found.path}, type model) to dvc.yaml"


def build(found: Found, ask: Ask | None = None, records: Path = RECORDS) -> Project:
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
        "records": str(records),
    }
    if found.data:
        fixable = [d for d in found.data if d.endswith(DATA_FORMATS)]
        raw["data"] = {"deps": [d for d in found.data if d not in fixable], "fix": fixable}
    if found.degrade:
        raw["drill"] = {"degrade": found.degrade}
    if ask is not None:
        raw.update(_asked_sections(found, ask, raw.get("data")))
    return parse(raw, "selfheal init")


def _asked_sections(found: Found, ask: Ask, data: dict[str, Any] | None) -> dict[str, Any]:
    """The optional sections a person can name and init cannot find: the label column, a new batch to watch for
    drift (and the data it is compared with), a retrain command, the service. An empty answer leaves it out."""
    out: dict[str, Any] = {}
    tabular = [d for d in found.data if d.endswith(READABLE)]
    if data is not None:
        target = ask("data.target: the label column, never filled or capped (empty: none)", "").strip()
        if target:
            out["data"] = {**data, "target": target}
    current = ask("drift.current: a new batch to compare with the training data (CSV/TSV/parquet; empty: no "
                  "drift section)", "").strip()
    if current:
        reference = ask("drift.reference: the data the production model learnt from",
                        tabular[0] if tabular else "").strip()
        out["drift"] = {"reference": reference, "current": current}
    command = ask("retrain.command: a shell command that folds a new batch in and retrains (empty: the repro "
                  "section)", "").strip()
    if command:
        out["retrain"] = {"command": command}
    start = ask("service.start: the command that starts the model's service, {port} for its port (empty: no "
                "service section)", "").strip()
    if start:
        health = ask("service.health: its URL answering 200 when healthy", "http://127.0.0.1:8080/health").strip()
        reload = ask("service.reload: a URL to POST after production changed (empty: none)", "").strip()
        out["service"] = {"start": start, "health": health, **({"reload": reload} if reload else {})}
    return out


HEADER = """# selfheal.yaml: what `selfheal heal` guards in this DVC project (docs/guarding.md lists every key).
# Written by `selfheal init`; edit freely. selfheal takes none of its settings from this project's params.yaml.
"""

OPTIONAL = """
# Optional, left for you to choose (docs/guarding.md):
# registry:                          # share versions and production with every clone that promotes
#   remote: origin
# drift:                             # compare a new batch with the data the model learnt from; retrain on drift
#   reference: data/train.csv
#   current: data/new_batch.csv
#   drift_threshold: 0.5             # share of drifted columns that means drift
# service:                           # keep the model's service up: `selfheal recover [--watch]`, heal's service step
#   health: http://127.0.0.1:8080/health
#   start: python serve.py --port {port}
#   reload: http://127.0.0.1:8080/reload
# escalation:                        # when heal stops acting on a recurring issue and asks for a person
#   max_same_issue: 3                # more often than this within window_hours (24)
#   max_auto_rollbacks: 2            # this many automatic rollbacks within window_hours
"""


def render(project: Project) -> str:
    # the escalation rules' defaults are the commented example below; service_recovery is our own service's
    doc = project.model_dump(exclude_none=True, exclude={"escalation", "service_recovery"})
    if not doc.get("registry"):
        doc.pop("registry", None)  # unset: this clone's tags (the commented example below shows the key)
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
        (f"found model artifact {found.artifact} at {found.path}" if found.declared else
         f"inferred model {found.artifact} at {found.path} (no artifacts: entry in dvc.yaml; `selfheal init "
         "--add-artifact` writes one)")
        + (f" (others: {', '.join(a for a in found.artifacts if a != found.name)}; pick with --artifact)"
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
    if project.drill is not None:
        lines.append(f"drill.degrade: {', '.join(f'{k} = {v}' for k, v in project.drill.degrade.items())} makes "
                     "the drill's bad candidate (`selfheal drill --faults model`): the gate must refuse it")
    else:
        lines.append("drill.degrade is not set: no size param (n_est, epochs, max_iter...) found for the drill's bad "
                     "candidate; name params that make a weak model to drill the gate (docs/guarding.md)")
    unset = [name for name in ("drift", "service") if getattr(project, name) is None]
    if unset:
        lines.append(f"{' and '.join(f'{n}:' for n in unset)} not set (see the commented example at the end of "
                     "selfheal.yaml, or `selfheal init --interactive --force`)")
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
    top = Path(project.records).parts[0]  # .selfheal, also for one artifact's .selfheal/nn
    entry = f"/{top}/"
    if entry in text.split() or f"{top}/" in text.split():
        return None
    atomic.write_text(ignore, text + ("" if not text or text.endswith("\n") else "\n")
                      + f"# selfheal's records (logs, locks, backups)\n{entry}\n")
    return f"added {entry} to .gitignore (selfheal's records)"


def init(cwd: Path = Path("."), *, force: bool = False, artifact: str | None = None,
         ask: Ask | None = None, add: bool = False) -> list[str]:
    """Discover, write selfheal.yaml, and return the lines to print. `add`: write an inferred model's
    `artifacts:` entry into dvc.yaml too (asked when interactive)."""
    target = cwd / project_file()
    if target.exists() and not force:
        raise InitError(f"{target.name} exists; pass --force to overwrite it")
    found = discover(cwd, artifact, ask)
    # a file of its own per artifact keeps its records apart too
    project = build(found, ask, RECORDS if target.name == PROJECT_FILE.name else RECORDS / found.name)
    if not found.declared and ask is not None and not add:
        add = ask(f"add `artifacts: {found.name}` to dvc.yaml, so DVC and GTO see the same model (y/n)",
                  "y").strip().lower().startswith("y")
    added = add_artifact(found, cwd) if add and not found.declared else None
    atomic.write_text(target, render(project))
    ignored = ignore_records(project, cwd)
    unreachable = _unreachable(project, cwd)
    return [*report(found, project, cwd, answered=ask is not None), *([added] if added else []),
            *([ignored] if ignored else []),
            *(f"warning: {v}'s outputs are in no cache and no remote this clone can read: it is listed, never "
              "restored" for v in unreachable), f"wrote {target.name}"]


def _unreachable(project: Project, cwd: Path) -> list[str]:
    """The registered versions whose outputs cannot be restored here."""
    from selfheal.versions.catalog import Versions

    versions = Versions(project, cwd)
    return [v.tag for v in versions.known if not versions.reachable(v)]
