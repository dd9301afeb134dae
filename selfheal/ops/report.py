"""`make report`: a Markdown report comparing the workspace with a base revision, for people and for CML.

It holds what a reviewer of a pull request asks: which params changed and what that did to the metrics (the
tables are DVC's own `dvc params diff --md` / `dvc metrics diff --md`), the holdout and drift plots as PNGs
referenced by relative path (so `cml comment create` uploads them), the drift summary, every self-healing action
logged since the base revision was committed, and a one-line verdict. Base-side files are read from git
(records, metrics and plot data are `cache: false`, so git holds them): no `dvc pull` of the base is needed.
selfheal.ops.ci renders the short form used as the GitHub Actions job summary.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from selfheal.core import atomic, audit, clock, workspace
from selfheal.core.errors import SelfHealError
from selfheal.versions import registry, vcs

VALIDATION = str(workspace.VALIDATION)
DRIFT = str(workspace.DRIFT)
PREDICTIONS_PLOT = str(workspace.PREDICTIONS_PLOT)
DRIFT_PLOT = str(workspace.DRIFT_PLOT)
# the declared (flat) metrics; drift has its own section
DIFF_METRICS = [str(p) for p in (workspace.VALIDATION_METRICS, workspace.TRAIN_METRICS, workspace.DATA_QUALITY_METRICS)]
# where a base revision older than the records kept the same information (its metrics file held the full record)
_BEFORE_RECORDS = {VALIDATION: str(workspace.VALIDATION_METRICS), DRIFT: str(workspace.DRIFT_METRICS)}
LOGS = {
    "data fix": workspace.DATA_FIX_LOG,
    "rollback": workspace.ROLLBACK_LOG,
    "retraining": workspace.RETRAINING_LOG,
    "recovery": workspace.RECOVERY_LOG,
    "alert": workspace.ALERTS_LOG,
    "heal": workspace.HEAL_LOG,  # heal runs and promotions
}
SAME = 1e-4  # metric changes below this are "unchanged" (the tables show 4 decimals)


@dataclass(frozen=True)
class Base:
    rev: str
    sha: str
    time: datetime

    @property
    def name(self) -> str:
        """What to call it, also in DVC's table headers: the rev as given, a hash shortened."""
        return self.sha[:10] if self.sha.startswith(self.rev.lower()) else self.rev

    @property
    def label(self) -> str:
        return self.name if self.name == self.sha[:10] else f"{self.rev} @ {self.sha[:7]}"


def _commit(rev: str) -> list[str]:
    return vcs.git("show", "-s", "--format=%H %cI", f"{rev}^{{commit}}", "--", check=False).split()


def resolve_base(rev: str) -> Base:
    """A git revision, or a model version as `make versions` names it (v0.0.3, model@v0.0.3, a seed alias)."""
    found = _commit(rev)
    if len(found) != 2:
        known = registry.versions()
        try:
            rev = registry.find(rev, known).tag  # a name git and DVC resolve too (`dvc metrics diff`)
            found = _commit(f"refs/tags/{rev}")
        except SelfHealError:
            names = ", ".join(v.name for v in known) or "none registered yet"
            raise SelfHealError(
                f"--base {rev}: not a commit of this git repo (in GitHub Actions check out with fetch-depth: 0) "
                f"and not a model version (known: {names})"
            ) from None
    return Base(rev, found[0], clock.parse_time(found[1]))


def at_revision(base: Base, path: str) -> str | None:
    """A file's content at the base revision, or None when it was not there."""
    data = vcs.show(base.sha, path)
    return data.decode("utf-8") if data is not None else None


def json_at(base: Base, path: str) -> Any:
    text = at_revision(base, path)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def record_at(base: Base, path: str) -> Any:
    """A stage's record at the base revision; for a revision from before metrics/records/, its metrics file."""
    found = json_at(base, path)
    return found if found is not None or path not in _BEFORE_RECORDS else json_at(base, _BEFORE_RECORDS[path])


class _Dvc:
    """A `dvc` command started now and read later: the report's three dvc calls (seconds each, mostly
    start-up) run side by side while the plots are drawn."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            ["dvc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=vcs.env()
        )

    def output(self) -> str:
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise SelfHealError(f"dvc {' '.join(self.args)} failed: {err.strip() or out.strip()}")
        return out.strip()


# --- self-healing actions and the verdict ---------------------------------------------------------------


def _committed_entries(base: Base, path: Path) -> list[dict[str, Any]]:
    data = json_at(base, path.as_posix())
    return list(data.get("history", [])) if isinstance(data, dict) else list(data or [])


def healing_actions(base: Base) -> list[dict[str, Any]]:
    """Every audit-log entry written since the base commit, oldest first, each tagged with its log.

    What the base revision holds is part of it: entries committed in its copy of a log (the retraining log
    CI commits back), and the entry recording the base commit itself (the promotion that made it).
    """
    found = []
    for log, path in LOGS.items():
        committed = _committed_entries(base, path)
        for entry in audit.entries(path):
            try:
                when = clock.parse_time(str(entry.get("timestamp")))
            except ValueError:
                continue
            if when >= base.time and entry.get("commit") != base.sha and entry not in committed:
                found.append({"log": log, "when": when, **entry})
    return sorted(found, key=lambda e: e["when"])


def verdict(
    current: dict[str, Any] | None, base: dict[str, Any] | None, actions: list[dict[str, Any]], base_label: str
) -> str:
    """One line: rolled back / worse / better / unchanged / new, with the numbers that decided it."""
    rollbacks = [a for a in actions if a["log"] == "rollback" and a.get("success")]
    if rollbacks:  # the guide's (and `selfheal rollback`'s) entry names the version in `version_restored`
        to = f" to {rollbacks[-1]['version_restored']}" if rollbacks[-1].get("version_restored") else ""
        return f"**rolled back**{to}: {rollbacks[-1].get('reason', 'see models/rollback_log.json')}"
    if not current:
        return f"**unknown**: no {VALIDATION} in the workspace (run `dvc repro`)"
    name, metric = current.get("metric_name", "metric"), current.get("metric")
    if not isinstance(metric, (int, float)):
        return f"**unknown**: {VALIDATION} has no numeric `metric`"
    if not current.get("passed", True):
        return f"**worse**: fails the validation gate: {'; '.join(current.get('reasons') or [])}"
    old = (base or {}).get("metric") if (base or {}).get("metric_name", name) == name else None
    if not isinstance(old, (int, float)):
        return f"**new**: {name} {metric:.4f} (no {name} at {base_label})"
    delta = metric - old
    word = "unchanged" if abs(delta) < SAME else ("better" if delta > 0 else "worse")
    return f"**{word}**: {name} {metric:.4f} vs {old:.4f} at {base_label} ({delta:+.4f})"


def cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def actions_table(actions: list[dict[str, Any]]) -> str:
    if not actions:
        return "No self-healing action was logged."
    core = {"log", "when", "timestamp", "action", "reason", "success"}
    noise = ("md5", "_cache")  # hashes and cache paths are in the logs; the table stays readable
    lines = ["| time (UTC) | log | action | result | reason | details |", "|---|---|---|---|---|---|"]
    for a in actions:
        details = ", ".join(
            f"{k}={v}"
            for k, v in a.items()
            if k not in core and not k.endswith(noise) and v is not None and not isinstance(v, (dict, list))
        )
        details = details if len(details) <= 160 else details[:159] + "…"
        result = "ok" if a.get("success") else "failed"
        lines.append(
            f"| {a['when']:%Y-%m-%d %H:%M:%S} | {a['log']} | {cell(a.get('action', ''))} | {result} "
            f"| {cell(a.get('reason', ''))} | {cell(details)} |"
        )
    return "\n".join(lines)


# --- drift --------------------------------------------------------------------------------------------------


def drift_line(current: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if not current:
        return f"No {DRIFT} in the workspace (run `dvc repro`)."
    share, threshold = current.get("share_of_drifted_columns", current.get("drift_score")), current.get("threshold")
    was = f" (base: {base['drift_score']:.2f})" if base and isinstance(base.get("drift_score"), (int, float)) else ""
    return (
        f"**{'Drift detected' if current.get('drift_detected') else 'No drift'}**: "
        f"{current.get('number_of_drifted_columns', '?')}/{current.get('number_of_columns', '?')} columns drifted, "
        f"share {share:.2f} against threshold {threshold:.2f}{was}; "
        f"prediction drift: {'yes' if current.get('prediction_drifted') else 'no'}."
    )


def drift_section(current: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    drifted = [c for c, v in ((current or {}).get("columns") or {}).items() if v.get("drifted")]
    columns = f"\n\nDrifted columns: {', '.join(f'`{c}`' for c in drifted)}." if drifted else ""
    return drift_line(current, base) + columns


# --- assembly -------------------------------------------------------------------------------------------


def _fixes(quality: dict[str, Any] | None) -> str:
    """What fix_data changed, per column, with the data_quality switch that turns each fix off."""
    from selfheal.pipeline.fixreport import changed_columns

    if not isinstance(quality, dict) or "columns" not in quality:
        return "No data quality record (run `dvc repro fix_data`)."
    lines = changed_columns(quality)
    rows = f"{quality.get('rows_in', 0):,} rows in, {quality.get('rows_out', 0):,} rows out"
    if not lines:
        return f"Nothing changed: {rows}."
    return "\n".join([*(f"- {line}" for line in lines), "", f"{rows}; the switch in brackets, set to `false` under "
                       "`data_quality` in params.yaml, turns that fix off."])


def _table_or(text: str, empty: str) -> str:
    """DVC prints a bare header when nothing changed: say so in words instead."""
    return text if len(text.strip().splitlines()) > 2 else empty


def _link(path: Path, out: Path) -> str:
    """A path relative to the report file: what Markdown viewers and `cml comment create` resolve."""
    return Path(os.path.relpath(path, out.parent)).as_posix()


def _plots(base: Base, assets: Path, out: Path, task: str) -> list[str]:
    from selfheal.ops import plots

    specs = [
        (PREDICTIONS_PLOT, "predictions.png", "Holdout: actual vs predicted",
         lambda now, old, png: plots.predictions_png(now, old, png, base.label, task)),
        (DRIFT_PLOT, "drift.png", "Drift score per column",
         lambda now, old, png: plots.drift_png(now, old, png, base.label)),
    ]
    lines = []
    for source, name, title, draw in specs:
        if not Path(source).exists():
            lines.append(f"_{title}: no {source} in the workspace._")
            continue
        now = plots.read_plot_csv(Path(source).read_text(encoding="utf-8"))
        png = draw(now, plots.read_plot_csv(at_revision(base, source)), assets / name)
        lines.append(f"![{title}]({_link(png, out)})")
    return lines


def build_report(base_rev: str = "main", out: Path = workspace.REPORT, assets: Path = workspace.REPORT_ASSETS) -> Path:
    """Write the full report (and its images under `assets`) and return its path."""
    base = resolve_base(base_rev)
    current_val, base_val = atomic.read_json(VALIDATION), record_at(base, VALIDATION)
    actions = healing_actions(base)
    targets = [t for t in DIFF_METRICS if Path(t).exists()]
    interactive = assets / "dvc_plots"
    interactive.mkdir(parents=True, exist_ok=True)
    params_diff = _Dvc("params", "diff", base.name, "--md")
    metrics_diff = _Dvc("metrics", "diff", base.name, "--md", "--precision", "4", *(["--targets", *targets] * bool(targets)))
    plots_diff = _Dvc("plots", "diff", base.name, "--out", str(interactive))
    images = _plots(base, assets, out, (current_val or {}).get("task", "regression"))
    params_md, metrics_md = params_diff.output(), metrics_diff.output()
    plots_diff.output()
    head = (vcs.head() or "no commit")[:7]
    text = "\n\n".join(
        [
            f"# selfheal report: workspace (HEAD {head}) vs `{base.label}`",
            f"Verdict: {verdict(current_val, base_val, actions, base.label)}",
            "## Params (`dvc params diff`)",
            _table_or(params_md, "No param changed."),
            "## Metrics (`dvc metrics diff`)",
            _table_or(metrics_md, "No metric changed."),
            "## Plots",
            *images,
            f"Interactive versions (`dvc plots diff`): `{_link(interactive / 'index.html', out)}`.",
            "## Data fixes (fix_data)",
            _fixes(atomic.read_json(workspace.DATA_QUALITY)),
            "## Drift",
            drift_section(atomic.read_json(DRIFT), record_at(base, DRIFT)),
            f"## Self-healing actions since `{base.label}` ({base.time:%Y-%m-%d %H:%M:%S} UTC)",
            actions_table(actions),
        ]
    )
    atomic.write_text(out, text + "\n")
    return out
