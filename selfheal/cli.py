"""The `selfheal` command. Each command imports its (possibly heavy) module only when it runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError, fail

if TYPE_CHECKING:
    from selfheal.core.config import Params
    from selfheal.core.project import Project

app = typer.Typer(
    help="selfheal: a DVC pipeline that fixes bad data, refuses bad models, retrains on drift and keeps its service up.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]


def _own_params(path: Path, config: Path | None = None) -> Params:
    """params.yaml of selfheal's own pipeline; a clear error in a project guarded through selfheal.yaml, whose
    params.yaml belongs to that project and is never parsed."""
    params = _project(path, config).params
    if params is None:
        raise SelfHealError("this command works on selfheal's own pipeline; this project is guarded through "
                            "selfheal.yaml (heal, promote, rollback, versions, retrain, status: see docs/guarding.md)")
    return params


@app.callback()
def _root() -> None:
    """Keep `selfheal <command>` a command group even while only one command is registered."""


@app.command()
def synth(
    params: ParamsOpt = workspace.PARAMS,
    force: Annotated[bool, typer.Option(help="Rewrite the files even when present")] = False,
) -> None:
    """Write the embedded default data (data.raw and data.current) from the synth params; skipped when present.
    What it writes is versioned with DVC (`dvc add`): the same bytes as the committed .dvc files on a fresh clone."""
    from selfheal.pipeline.synth import write_default_data
    from selfheal.versions import vcs

    written = []
    for line in write_default_data(_own_params(params), force=force):
        typer.echo(line)
        if line.startswith("wrote "):
            written.append(line.split()[1])
    if written and Path(".dvc").is_dir():
        vcs.dvc("add", "--quiet", *written)
        typer.echo(f"versioned with DVC: {', '.join(f'{p}.dvc' for p in written)}")


@app.command()
def report(
    base: Annotated[str, typer.Option(help="Git revision to compare the workspace with")] = "main",
    out: Annotated[Path, typer.Option(help="Markdown file to write")] = workspace.REPORT,
    assets: Annotated[Path, typer.Option(help="Directory for the report's images")] = workspace.REPORT_ASSETS,
) -> None:
    """Write a Markdown report of the workspace vs BASE: params and metrics diffs, plots, drift, healing, verdict."""
    from selfheal.ops.report import build_report

    typer.echo(f"report: wrote {build_report(base, out, assets)}")


@app.command("drift-report")
def drift_report(
    out: Annotated[Path, typer.Option(help="HTML file to write")] = workspace.DRIFT_REPORT,
    params: Annotated[Path, typer.Option(help="params.yaml to read")] = workspace.PARAMS,
) -> None:
    """Write Evidently's HTML drift report of what the monitor stage compares (the current batch and the model's
    predictions vs the training reference): the same tests and verdicts as metrics/records/drift.json."""
    from selfheal.core import atomic
    from selfheal.pipeline.drift_report import report_html

    typer.echo(f"drift-report: wrote {atomic.write_text(out, report_html(_own_params(params)))}")


@app.command("offline-plots")
def offline_plots() -> None:
    """Make `dvc plots show` / `dvc plots diff` pages render with no network: write DVC's page with Vega inlined
    into .dvc/plots/offline.html and set plots.html_template in .dvc/config."""
    from selfheal.ops.offline_plots import install

    for line in install(Path(".")):
        typer.echo(f"offline-plots: {line}")


class OutputsKind(str, Enum):
    validation = "validation"
    drift = "drift"


@app.command("ci-outputs")
def ci_outputs(
    kind: Annotated[OutputsKind, typer.Argument(help="validation: metric, threshold, passed; drift: drift_detected, drift_score")],
    github_output: Annotated[
        str | None, typer.Option(envvar="GITHUB_OUTPUT", help="File to append key=value lines to")
    ] = None,
) -> None:
    """Print a pipeline result as key=value step outputs and append them to $GITHUB_OUTPUT."""
    from selfheal.ops.ci import step_outputs, write_outputs

    for line in write_outputs(step_outputs(kind.value), github_output):
        typer.echo(line)


@app.command("ci-summary")
def ci_summary(
    base: Annotated[str, typer.Option(help="Revision the run checked out: actions logged since then are listed")] = "HEAD",
    step_summary: Annotated[
        str | None, typer.Option(envvar="GITHUB_STEP_SUMMARY", help="File to append the Markdown to")
    ] = None,
) -> None:
    """Print what healed (gate, drift, self-healing actions, verdict) and append it to $GITHUB_STEP_SUMMARY."""
    from selfheal.ops.ci import append_summary, job_summary

    text = job_summary(base)
    append_summary(text, step_summary)
    typer.echo(text, nl=False)


@app.command()
def exp(
    grid: Annotated[Path, typer.Option(help="Grid file: params to vary and their values")] = workspace.EXP_GRID,
    jobs: Annotated[int, typer.Option(min=1, help="Experiments run at a time")] = 1,
) -> None:
    """Queue the grid as DVC experiments, run them all, and print `dvc exp show --md` best first."""
    from selfheal.ops.experiments import run_grid, table

    names, failed = run_grid(grid, jobs)
    typer.echo(f"\nexperiments of this grid: {', '.join(names)}\n")
    typer.echo(table())
    if failed:
        raise SelfHealError(f"{len(failed)} of {len(names)} experiment(s) failed: {', '.join(failed)} (see State)")


@app.command("exp-apply")
def exp_apply(
    name: Annotated[str | None, typer.Argument(help="Experiment to apply (default: the best by validation metric)")] = None,
) -> None:
    """Apply an experiment's params, outputs and metrics to the workspace (`dvc exp apply`)."""
    from selfheal.ops.experiments import apply

    applied = apply(name)
    typer.echo(f"applied experiment {applied}; review with `git diff`, keep it with `git commit -am ...`")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    model: Annotated[Path, typer.Option(help="Model file (model.json beside it)")] = workspace.MODEL,
    params: ParamsOpt = workspace.PARAMS,
) -> None:
    """Serve the production model (FastAPI + uvicorn): /health, /predict, /schema, /metrics, POST /admin/reload.

    Writes .selfheal/service.pid so `selfheal recover` can find it; SIGHUP reloads the model and configuration.
    """
    from selfheal.service.server import main as serve_main

    _own_params(params)
    raise typer.Exit(serve_main(["--host", host, "--port", str(port), "--model", str(model)]))


@app.command()
def recover(
    method: Annotated[str, typer.Option(help="auto (cache -> config -> process), cache, config, process or docker")] = "auto",
    service_url: Annotated[str | None, typer.Option(help="Service URL (default: service_recovery.service_url)")] = None,
    watch: Annotated[bool, typer.Option(help="Keep watching and recovering until stopped (Ctrl-C)")] = False,
    interval: Annotated[float | None, typer.Option(help="Seconds between health checks with --watch")] = None,
    container: Annotated[str | None, typer.Option(help="Container for --method docker")] = None,
    params: ParamsOpt = workspace.PARAMS,
    config: Annotated[Path | None, typer.Option(help="Seed-format self_healing_config.json overriding params")] = None,
) -> None:
    """Check the service's health and recover it if needed; exit 1 (and an alert) when every attempt fails."""
    from selfheal.recovery.configured import ladder
    from selfheal.recovery.ladder import recover as run_recover

    project = _project(params, config)
    if project.params is None and (service_url or container):
        raise SelfHealError("--service-url/--container apply to selfheal's own service; a configured project's "
                            "service is selfheal.yaml's service.health and service.start")
    sr, target = ladder(project)
    if method not in target.methods:
        raise SelfHealError(f"--method {method!r}: expected one of {', '.join(target.methods)}")
    if container:
        sr = sr.model_copy(update={"docker_container": container})
    if watch:
        from selfheal.recovery.watch import watch_until_signalled

        raise typer.Exit(watch_until_signalled(sr, method, service_url, interval, target=target))
    raise typer.Exit(run_recover(sr, method, service_url, target=target).exit_code)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Seed-format config/self_healing_config.json overriding params")
]
WaitOpt = Annotated[float, typer.Option("--wait", help="Seconds to wait for another running heal/rollback/retrain")]


def _project(params: Path, config: Path | None) -> Project:
    """The project (either kind); for our own pipeline with its params and selfheal.yaml's own groups."""
    from selfheal.core.project import open_project

    return open_project(".", params, config)


@app.command()
def acknowledge(
    issue: Annotated[str | None, typer.Argument(help="The issue a person has looked at (service); all when omitted")] = None,
) -> None:
    """A person has looked: clear an escalation (e.g. the watcher's restart storm), so selfheal acts on it again."""
    from selfheal.core.escalation import acknowledge as clear

    cleared = clear(issue)
    typer.echo(f"acknowledged: {', '.join(cleared)}" if cleared else "nothing to acknowledge")


@app.command()
def init(
    force: Annotated[bool, typer.Option(help="Overwrite an existing selfheal.yaml")] = False,
    artifact: Annotated[str | None, typer.Option(help="Model artifact to guard when dvc.yaml declares several")] = None,
    interactive: Annotated[bool, typer.Option(help="Ask for the gate metric, direction, bound and stage, and the optional data label, drift, retrain and service settings")] = False,
    add_artifact: Annotated[bool, typer.Option(
        "--add-artifact", help="Write an inferred model's artifacts: entry into dvc.yaml")] = False,
) -> None:
    """Discover this DVC project's model (its artifacts: entry, or the stage output that looks like a model),
    stages, metrics and GTO tags; write selfheal.yaml."""
    from selfheal.ops.init import init as run_init

    ask = (lambda question, default: typer.prompt(question, default=default, show_default=True)) if interactive else None
    for line in run_init(Path("."), force=force, artifact=artifact, ask=ask, add=add_artifact):
        typer.echo(line)


@contextmanager
def _acting(action: str, params: Path, config: Path | None, wait: float, settle: bool = True
            ) -> Iterator[Project]:
    """The project (either kind) and our pipeline's params, with the healing lock held for `action` (one actor at
    a time); first what killed actions left behind is completed or reported (heal does that itself, to weigh it)."""
    from selfheal.core.journal import settle as settle_journal
    from selfheal.healing.guard import exclusive
    from selfheal.healing.heal import data_folders

    project = _project(params, config)
    with exclusive(action, wait):
        if settle:
            for line in settle_journal(data_folders(project)).lines():
                typer.echo(f"{action}: {line}")
        yield project


@app.command()
def rollback(
    version: Annotated[str | None, typer.Option(help="Version to restore: v0.0.3, model@v0.0.3 or v20241120_150000")] = None,
    current_metric: Annotated[float | None, typer.Option(help="Metric of the current model (the guide's flag)")] = None,
    threshold: Annotated[float | None, typer.Option(help="Threshold for --current-metric (default: the gate's)")] = None,
    params: ParamsOpt = workspace.PARAMS,
    config: ConfigOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Restore the last good production model (auto) or --version V: a verified checkout from git + DVC."""
    from selfheal.healing.actions import reloader
    from selfheal.versions.rollback import rollback as run_rollback

    with _acting("rollback", params, config, wait) as project:
        if current_metric is not None and threshold is None:
            own = project.params  # our pipeline's threshold, else the gate's bound
            threshold = own.model_validation.min_accuracy_threshold if own else project.gate.bound
        run_rollback(project, version=version, current_metric=current_metric, threshold=threshold,
                     reload=reloader(project))


@app.command()
def versions(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List registered model versions (oldest first) and mark production."""
    import json

    from selfheal.core.project import current
    from selfheal.versions.catalog import Versions

    project = current()
    rows = Versions(project).rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no registered versions of {project.model.artifact} yet (a candidate that passes the gate is "
                   "promoted by `selfheal heal`)")
    for r in rows:
        metric = (f"{r['metric_name']} {r['metric']:.3f}" if isinstance(r["metric"], (int, float))
                  else "-" if r["reachable"] else "unknown: outputs not reachable")
        typer.echo(f"{'*' if r['production'] else ' '} {r['tag']:<24} {r['alias'] or '-':<17} "
                   f"{r['created_at']:<26} {metric:<12} {(r['md5'] or '-')[:12]}"
                   + (f"  <- {project.gate.stage}" if r["production"] else ""))


@app.command()
def promote(
    wait: WaitOpt = 0.0, params: ParamsOpt = workspace.PARAMS, config: ConfigOpt = None,
    accept_schema_change: Annotated[bool, typer.Option(
        "--accept-schema-change", help="Promote a model whose input columns or types differ from production's")] = False,
    force: Annotated[bool, typer.Option(
        help="Promote even when the candidate fails the gate (the heal log records who overrode what)")] = False,
) -> None:
    """Promote the workspace candidate that passes the gate: push to the DVC remote, commit, tag, set production."""
    from selfheal.healing.actions import reloader
    from selfheal.versions.promote import promote as run_promote

    reason = "promoted by `selfheal promote`" + (" --accept-schema-change" if accept_schema_change else "") + (
        " --force" if force else "")
    with _acting("promote", params, config, wait) as project:
        run_promote(project, reason=reason, reload=reloader(project),
                    accept_schema_change=accept_schema_change, force=force, by_person=True)


@app.command()
def retrain(
    drift_detected: Annotated[bool, typer.Option("--drift-detected", help="Drift was detected (seed flag; without a score: above the threshold)")] = False,
    drift_score: Annotated[float | None, typer.Option(help="Drift score (seed flag); default: metrics/records/drift.json")] = None,
    force: Annotated[bool, typer.Option(help="Skip the retraining cooldown")] = False,
    params: ParamsOpt = workspace.PARAMS,
    config: ConfigOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Retrain on drift (cooldown permitting): fold the current batch in, dvc repro, then promote or roll back."""
    from selfheal.healing.retrain import retrain as run_retrain

    with _acting("retrain", params, config, wait) as project:
        entry = run_retrain(project, drift_detected=drift_detected, drift_score=drift_score, force=force)
    if entry is not None and not entry["success"]:
        raise typer.Exit(1)


@app.command("fix-data")
def fix_data(
    data_path: Annotated[Path | None, typer.Option(help="CSV to fix in place (default: data.raw)")] = None,
    params: ParamsOpt = workspace.PARAMS,
    config: ConfigOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Fix a CSV in place as the fix_data stage would (backup first); exit 1 if it is still invalid."""
    from selfheal.healing.filefix import fix_file
    from selfheal.pipeline.csvread import declared_text, prefetch

    _own_params(params, config)  # refused before the lock: a guarded project's heal fixes its data.fix files
    with _acting("fix-data", params, config, wait) as project:
        p = project.params
        assert p is not None
        path = data_path or Path(p.data.raw)
        entry = fix_file(path, p, prefetch(path, declared_text(p.data.columns)))  # the rest imports while it reads
    if not entry["success"]:
        raise typer.Exit(1)


@app.command()
def heal(
    plan: Annotated[bool, typer.Option("--plan", help="Print what heal would do and why; change nothing")] = False,
    params: ParamsOpt = workspace.PARAMS,
    config: ConfigOpt = None,
    wait: WaitOpt = 0.0,
) -> None:
    """Fix data -> gate the model (promote / roll back) -> retrain on drift -> recover the service; escalate loops."""
    from selfheal.healing.heal import heal as run_heal

    if plan:
        raise typer.Exit(run_heal(_project(params, config), plan_only=True))
    with _acting("heal", params, config, wait, settle=False) as project:
        code = run_heal(project)
    raise typer.Exit(code)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """Self-healing success metrics from the audit logs; also written to metrics/self_healing.json."""
    import json

    from selfheal.core.project import current
    from selfheal.healing.status import lines, write_status

    project = current()
    metrics = write_status(project)
    typer.echo(json.dumps(metrics, indent=2) if as_json else
               "\n".join([*lines(metrics), f"(written to {project.record(workspace.SELF_HEALING)})"]))


@app.command()
def drill(
    faults: Annotated[str, typer.Option(help="all, a group (data, model, drift, service, config) or fault names, comma-separated; only those that apply to this project")] = "all",
    repeat: Annotated[int, typer.Option(min=1, help="Trials per fault kind")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the fault injection (same seed, same faults)")] = 42,
    quick: Annotated[bool, typer.Option(help="Small data and no MLflow: the CI-sized drill (our pipeline)")] = False,
    out: Annotated[Path | None, typer.Option(help=f"Scorecard JSON [default: {workspace.DRILL}; .selfheal/drill.json in a guarded project]")] = None,
    card: Annotated[Path | None, typer.Option(help=f"Scorecard Markdown [default: {workspace.DRILL_CARD}; .selfheal/drill.md in a guarded project]")] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep the throwaway copies in this (new) folder")] = None,
    busy: Annotated[int, typer.Option(min=0, help="CPU-bound processes to run throughout (a busy machine: e.g. one per core)")] = 0,
) -> None:
    """Inject faults into a throwaway copy of this project (ours, or one guarded by selfheal.yaml), let selfheal
    heal, and score it (never touches the workspace or its remotes); exit 1 unless every trial ended as
    expected."""
    import signal

    from selfheal.core import atomic
    from selfheal.ops import drill as run_drill
    from selfheal.ops.faults import select
    from selfheal.ops.scorecard import markdown

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds: the temporary copies, their processes and the CPU hogs go

    signal.signal(signal.SIGTERM, stop)
    on = run_drill.target(Path.cwd())
    chosen = select(faults, on.capabilities)
    out, card = out or on.config.record(workspace.DRILL), card or on.config.record(workspace.DRILL_CARD)
    scorecard = run_drill.run(Path.cwd(), chosen, on=on, repeat=repeat, seed=seed, quick=quick, keep=keep,
                              say=typer.echo, busy=busy)
    atomic.write_json(out, scorecard)
    atomic.write_text(card, markdown(scorecard))
    summary = scorecard["summary"]
    typer.echo(f"drill: {summary['passed']}/{summary['trials']} as expected; scorecard in {card} and {out}")
    if summary["passed"] != summary["trials"]:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    from selfheal.core.alerts import check_webhook

    try:
        check_webhook()  # the configuration every command may alert through: checked before anything acts
        app()
    except SelfHealError as exc:
        fail(str(exc), exc.exit_code)
