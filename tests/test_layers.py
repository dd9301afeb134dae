"""The architecture as a rule: layer folders, imports only go down, a pure policy, a light service.

Reads every module's imports (module-level and the lazy ones inside functions) with `ast`, so a new import that
breaks the layering fails here before it confuses a maintainer.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "selfheal"

# a layer may import the layers of a lower rank and itself; equal ranks do not import each other
RANK = {"core": 0, "pipeline": 1, "versions": 2, "service": 3, "recovery": 4, "healing": 5, "ops": 6, "cli": 7}
# the service serves production, which the registry (versions) names; of pipeline it may use the model artifact
SERVICE_MAY_USE = {"selfheal.pipeline.artifact"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every selfheal module `path` imports, anywhere in the file (`from selfheal.x import y` counts x.y when y
    is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("selfheal")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("selfheal"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else node.module)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return parts[1]


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_lives_in_a_layer_folder() -> None:
    flat = sorted(m for m in MODULES if _layer(m) not in RANK and m != "selfheal")
    assert flat == [], f"modules outside the layer folders: {flat}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module: str) -> None:
    layer = _layer(module)
    if layer is None:
        return
    wrong = []
    for imported in _imports(MODULES[module]):
        target = _layer(imported)
        if target is None or target == layer:
            continue
        if layer == "service" and target == "pipeline":
            if imported not in SERVICE_MAY_USE:
                wrong.append(imported)
            continue
        if RANK[target] >= RANK[layer]:
            wrong.append(imported)
    assert wrong == [], f"{module} ({layer}) imports from the same or a higher layer: {wrong}"


def test_stages_import_only_core_and_pipeline() -> None:
    for path in sorted((ROOT / "stages").glob("*.py")):
        layers = {_layer(m) for m in _imports(path)}
        assert layers <= {"core", "pipeline"}, f"{path.name} imports {layers - {'core', 'pipeline'}}"


def test_the_policy_is_pure() -> None:
    """The policy decides from observations; it imports no action, no pipeline and no I/O module."""
    assert _imports(MODULES["selfheal.healing.policy"]) <= {"selfheal.core.clock", "selfheal.core.config"}
    tree = ast.parse(MODULES["selfheal.healing.policy"].read_text(encoding="utf-8"))
    stdlib = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    stdlib |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not stdlib & {"os", "subprocess", "pathlib", "time", "shutil", "json", "requests"}


def test_the_service_loads_no_heavy_library() -> None:
    code = ("import sys; import selfheal.service.app, selfheal.service.server, selfheal.service.client; "
            "print(sorted(m for m in ('mlflow', 'evidently', 'dvc', 'gto') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_io_no_longer_shadows_the_standard_library() -> None:
    assert not [p for p in PACKAGE.rglob("*.py") if p.stem in sys.stdlib_module_names and p.stem != "__init__"]
