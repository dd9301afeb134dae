"""`dvc plots` pages that render with no network: the committed template, and `selfheal offline-plots` on any
DVC project, checked in a real headless browser that can reach nothing but this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

from selfheal.core import workspace
from selfheal.ops import offline_plots, sandbox
from tests.browser import rendered_dom

ROOT = Path(__file__).resolve().parents[2]
PLOTS = {"loss.csv": "step,loss\n0,1.0\n1,0.5\n2,0.25\n", "scores.csv": "name,score\na,0.8\nb,0.6\n"}


def _drawn(page: Path) -> int:
    """Vega views the page drew (one `marks` element each)."""
    return rendered_dom(page.resolve().as_uri()).count('class="marks"')


def test_the_committed_template_is_what_the_command_writes() -> None:
    """This repository's template is vl-convert's current bundle in DVC's page, and its DVC config uses it."""
    assert (ROOT / workspace.PLOTS_TEMPLATE).read_text() == offline_plots.page()
    config = (ROOT / ".dvc" / "config").read_text()
    assert f"{offline_plots.CONFIG_KEY} = {workspace.PLOTS_TEMPLATE.relative_to('.dvc').as_posix()}" in config


def test_offline_plots_makes_a_projects_plots_page_draw_offline(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "plots").mkdir(parents=True)
    for name, text in PLOTS.items():
        (project / "plots" / name).write_text(text)
    (project / "dvc.yaml").write_text("plots:\n  - plots/loss.csv:\n      x: step\n  - plots/scores.csv:\n"
                                      "      x: name\n      template: bar_horizontal\n")
    sandbox.run(["git", "init", "-q"], project)
    sandbox.run(["dvc", "init", "-q"], project)
    sandbox.run(["dvc", "plots", "show", "-o", "cdn"], project)
    assert _drawn(project / "cdn" / "index.html") == 0  # DVC's own page needs its CDN: blank here

    out = sandbox.run(["selfheal", "offline-plots"], project).stdout
    assert "plots.html_template = plots/offline.html" in out
    sandbox.run(["dvc", "plots", "show", "-o", "offline"], project)
    assert _drawn(project / "offline" / "index.html") == len(PLOTS)
    assert "cdn.jsdelivr" not in (project / "offline" / "index.html").read_text()


def test_offline_plots_outside_a_dvc_project_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(["selfheal", "offline-plots"], cwd=tmp_path, env=sandbox.env(), capture_output=True,
                          text=True)
    assert proc.returncode != 0
    assert "not a DVC project (no .dvc/ folder)" in proc.stderr and "Traceback" not in proc.stderr
