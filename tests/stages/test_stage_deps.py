"""Each DVC stage declares exactly the code it runs: its stage module and every selfheal module it imports,
transitively (imports inside functions included), computed here from the source. So an edit reruns the stages
that run the edited code, and only those (checked with `dvc status` in a built project)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import yaml

from selfheal.ops import sandbox

ROOT = Path(__file__).resolve().parents[2]
OWN = ("selfheal", "stages")


def _file(module: str) -> Path | None:
    for candidate in (ROOT / f"{module.replace('.', '/')}.py", ROOT / module.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every module `path` names in an import statement, wherever it stands (function bodies too)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[: len(package) - node.level + 1], *[node.module or ""]]).strip(".") \
                if node.level else node.module or ""
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {m for m in found if m.split(".")[0] in OWN}


def code_of(module: str) -> set[str]:
    """The files of our code that `python -m <module>` runs: the module, what it imports, their packages."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        path = _file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += sorted(_imports(path))
    return {str(p.relative_to(ROOT)) for p in seen}


def _declared() -> dict[str, set[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: {d for d in stage["deps"] if d.endswith(".py") or d.rstrip("/") in OWN
                   or d.startswith(tuple(f"{o}/" for o in OWN))} for name, stage in stages.items()}


def test_each_stage_declares_exactly_the_modules_it_imports() -> None:
    for stage, declared in _declared().items():
        assert declared == code_of(f"stages.{stage}"), stage
    assert "selfheal/pipeline/synth.py" not in set().union(*_declared().values())  # the default data's generator
    assert not any("drift_report" in d or "tracking" in d for d in _declared()["monitor"])  # no Evidently, MLflow
    assert not any("tracking" in d for d in _declared()["validate"])


def test_an_edit_reruns_only_the_stages_that_import_it(project: Path) -> None:
    def stale() -> set[str]:
        out = sandbox.run(["dvc", "status", "--json"], project).stdout
        return set(json.loads(out or "{}"))

    assert stale() == set()
    for untouched in ("selfheal/pipeline/synth.py", "selfheal/ops/stage_runner.py", "selfheal/pipeline/drift_report.py"):
        with open(project / untouched, "a", encoding="utf-8") as fh:
            fh.write("\n# an edit no stage runs\n")
    assert stale() == set()
    with open(project / "selfheal/pipeline/profile_drift.py", "a", encoding="utf-8") as fh:
        fh.write("\n# an edit only the monitor runs\n")
    assert stale() == {"monitor"}
