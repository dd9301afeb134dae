"""The `selfheal` command. Each command imports its (possibly heavy) module only when it runs, and the parser is
the standard library's: `selfheal heal` on a healthy project costs little more than reading the project."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from selfheal.core import workspace
from selfheal.core.errors import SelfHealError, fail

if TYPE_CHECKING:
    from selfheal.core.config import Params
    from selfheal.core.project import Project

DESCRIPTION = "selfheal: a DVC pipeline that fixes bad data, refuses bad models, retrains on drift and keeps its service up."
Run = Callable[[argparse.Namespace], "int | None"]
COMMANDS: list[tuple[str, Run, tuple[tuple[tuple[str, ...], dict[str, Any]], ...]]] = []


def option(*flags: str, **settings: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """One argument of a command, as `argparse.ArgumentParser.add_argument` takes it."""
    return flags, settings


def switch(flag: str, help: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """A boolean option that is off unless given, with its `--no-` form."""
    return option(flag, action=argparse.BooleanOptionalAction, default=False, help=help)


def command(*arguments: tuple[tuple[str, ...], dict[str, Any]], name: str | None = None) -> Callable[[Run], Run]:
    """Register a command: its name (the function's, dashed), its docstring as help, its arguments."""
    def register(run: Run) -> Run:
        COMMANDS.append((name or run.__name__.replace("_", "-"), run, arguments))
        return run
    return register


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text}")
    return value


def not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 0, got {text}")
    return value


PARAMS = option("--params", type=Path, default=workspace.PARAMS, help="params.yaml to read")
CONFIG = option("--config", type=Path, help="Seed-format config/self_healing_config.json overriding params")
WAIT = option("--wait", type=float, default=0.0, help="Seconds to wait for another running heal/rollback/retrain")


def _project(params: Path, config: Path | None) -> Project:
    """The project (either kind); for our own pipeline with its params and selfheal.yaml's own groups."""
    from selfheal.core.project import open_project

    return open_project(".", params, config)


def _own_params(path: Path, config: Path | None = None) -> Params:
    """params.yaml of selfheal's own pipeline; a clear error in a project guarded through selfheal.yaml, whose
    params.yaml belongs to that project and is never parsed."""
    params = _project(path, config).params
    if params is None:
        raise SelfHealError("this command works on selfheal's own pipeline; this project is guarded through "
                            "selfheal.yaml (heal, promote, rollback, versions, retrain, status: see docs/guarding.md)")
    return params


@contextmanager
def _acting(action: str, args: argparse.Namespace, settle: bool = True) -> Iterator[Project]:
    """The project with the healing lock held for `action` (one actor at a time); first what killed actions left
    behind is completed or reported (heal does that itself, to weigh it)."""
    from selfheal.core.journal import settle as settle_journal
    from selfheal.healing.guard import exclusive
    from selfheal.healing.heal import data_folders

    project = _project(args.params, args.config)
    with exclusive(action, args.wait):
        if settle:
            for line in settle_journal(data_folders(project)).lines():
                print(f"{action}: {line}")
        yield project


@command(PARAMS, switch("--force", "Rewrite the files even when present"))
def synth(args: argparse.Namespace) -> None:
    """Write the embedded default data (data.raw and data.current) from the synth params; skipped when present.
    What it writes is versioned with DVC (`dvc add`): the same bytes as the committed .dvc files on a fresh clone."""
    from selfheal.pipeline.synth import write_default_data
    from selfheal.versions import vcs

    written = []
    for line in write_default_data(_own_params(args.params), force=args.force):
        print(line)
        if line.startswith("wrote "):
            written.append(line.split()[1])
    if written and Path(".dvc").is_dir():
        vcs.dvc("add", "--quiet", *written)
        print(f"versioned with DVC: {', '.join(f'{p}.dvc' for p in written)}")


@command(option("--base", default="main", help="Git revision to compare the workspace with"),
         option("--out", type=Path, default=workspace.REPORT, help="Markdown file to write"),
         option("--assets", type=Path, default=workspace.REPORT_ASSETS, help="Directory for the report's images"))
def report(args: argparse.Namespace) -> None:
    """Write a Markdown report of the workspace vs BASE: params and metrics diffs, plots, drift, healing, verdict."""
    from selfheal.ops.report import build_report

    print(f"report: wrote {build_report(args.base, args.out, args.assets)}")


@command(option("--out", type=Path, default=workspace.DRIFT_REPORT, help="HTML file to write"), PARAMS)
def drift_report(args: argparse.Namespace) -> None:
    """Write Evidently's HTML drift report of what the monitor stage compares (the current batch and the model's
    predictions vs the training reference): the same tests and verdicts as metrics/records/drift.json."""
    from selfheal.core import atomic
    from selfheal.pipeline.drift_report import report_html

    print(f"drift-report: wrote {atomic.write_text(args.out, report_html(_own_params(args.params)))}")


@command()
def offline_plots(args: argparse.Namespace) -> None:
    """Make `dvc plots show` / `dvc plots diff` pages render with no network: write DVC's page with Vega inlined
    into .dvc/plots/offline.html and set plots.html_template in .dvc/config."""
    from selfheal.ops.offline_plots import install

    for line in install(Path(".")):
        print(f"offline-plots: {line}")


@command(option("kind", choices=("validation", "drift"),
                help="validation: metric, threshold, passed; drift: drift_detected, drift_score"),
         option("--github-output", help="File to append key=value lines to (default: $GITHUB_OUTPUT)"))
def ci_outputs(args: argparse.Namespace) -> None:
    """Print a pipeline result as key=value step outputs and append them to $GITHUB_OUTPUT."""
    from selfheal.ops.ci import step_outputs, write_outputs

    for line in write_outputs(step_outputs(args.kind), args.github_output or os.environ.get("GITHUB_OUTPUT")):
        print(line)


@command(option("--base", default="HEAD", help="Revision the run checked out: actions logged since then are listed"),
         option("--step-summary", help="File to append the Markdown to (default: $GITHUB_STEP_SUMMARY)"))
def ci_summary(args: argparse.Namespace) -> None:
    """Print what healed (gate, drift, self-healing actions, verdict) and append it to $GITHUB_STEP_SUMMARY."""
    from selfheal.ops.ci import append_summary, job_summary

    text = job_summary(args.base)
    append_summary(text, args.step_summary or os.environ.get("GITHUB_STEP_SUMMARY"))
    print(text, end="")


@command(option("--grid", type=Path, default=workspace.EXP_GRID, help="Grid file: params to vary and their values"),
         option("--jobs", type=at_least_one, default=1, help="Experiments run at a time"))
def exp(args: argparse.Namespace) -> None:
    """Queue the grid as DVC experiments, run them all, and print `dvc exp show --md` best first."""
    from selfheal.ops.experiments import run_grid, table

    names, failed = run_grid(args.grid, args.jobs)
    print(f"\nexperiments of this grid: {', '.join(names)}\n")
    print(table())
    if failed:
        raise SelfHealError(f"{len(failed)} of {len(names)} experiment(s) failed: {', '.join(failed)} (see State)")


@command(option("name", nargs="?", help="Experiment to apply (default: the best by validation metric)"))
def exp_apply(args: argparse.Namespace) -> None:
    """Apply an experiment's params, outputs and metrics to the workspace (`dvc exp apply`)."""
    from selfheal.ops.experiments import apply

    applied = apply(args.name)
    print(f"applied experiment {applied}; review with `git diff`, keep it with `git commit -am ...`")


@command(option("--host", default="127.0.0.1", help="Interface to listen on"),
         option("--port", type=int, default=8000, help="TCP port"),
         option("--model", type=Path, default=workspace.MODEL, help="Model file (model.json beside it)"), PARAMS)
def serve(args: argparse.Namespace) -> int:
    """Serve the production model (FastAPI + uvicorn): /health, /predict, /schema, /metrics, POST /admin/reload.
    Writes .selfheal/service.pid so `selfheal recover` can find it; SIGHUP reloads the model and configuration."""
    from selfheal.service.server import main as serve_main

    _own_params(args.params)
    return serve_main(["--host", args.host, "--port", str(args.port), "--model", str(args.model)])


@command(option("--method", default="auto", help="auto (cache -> config -> process), cache, config, process or docker"),
         option("--service-url", help="Service URL (default: service_recovery.service_url)"),
         switch("--watch", "Keep watching and recovering until stopped (Ctrl-C)"),
         option("--interval", type=float, help="Seconds between health checks with --watch"),
         option("--container", help="Container for --method docker"), PARAMS, CONFIG)
def recover(args: argparse.Namespace) -> int:
    """Check the service's health and recover it if needed; exit 1 (and an alert) when every attempt fails."""
    from selfheal.recovery.configured import ladder
    from selfheal.recovery.ladder import recover as run_recover

    project = _project(args.params, args.config)
    if project.params is None and (args.service_url or args.container):
        raise SelfHealError("--service-url/--container apply to selfheal's own service; a configured project's "
                            "service is selfheal.yaml's service.health and service.start")
    sr, target = ladder(project)
    if args.method not in target.methods:
        raise SelfHealError(f"--method {args.method!r}: expected one of {', '.join(target.methods)}")
    if args.container:
        sr = sr.model_copy(update={"docker_container": args.container})
    if args.watch:
        from selfheal.recovery.watch import watch_until_signalled

        return watch_until_signalled(sr, args.method, args.service_url, args.interval, target=target)
    return run_recover(sr, args.method, args.service_url, target=target).exit_code


@command(option("issue", nargs="?", help="The issue a person has looked at (service); all when omitted"))
def acknowledge(args: argparse.Namespace) -> None:
    """A person has looked: clear an escalation (such as the watcher's restart storm), so selfheal acts on it again."""
    from selfheal.core.escalation import acknowledge as clear

    cleared = clear(args.issue)
    print(f"acknowledged: {', '.join(cleared)}" if cleared else "nothing to acknowledge")


def _ask(question: str, default: str) -> str:
    """One interactive answer; Enter (or the end of input) keeps the default shown in brackets."""
    try:
        answer = input(f"{question} [{default}]: " if default else f"{question}: ")
    except EOFError:
        print()
        return default
    return answer or default


@command(switch("--force", "Overwrite an existing selfheal.yaml"),
         option("--artifact", help="Model artifact to guard when dvc.yaml declares several"),
         switch("--interactive", "Ask for the gate metric, direction, bound and stage, and the optional data label, "
                "drift, retrain and service settings"),
         option("--add-artifact", action="store_true", help="Write an inferred model's artifacts: entry into dvc.yaml"))
def init(args: argparse.Namespace) -> None:
    """Discover this DVC project's model (its artifacts: entry, or the stage output that looks like a model),
    stages, metrics and GTO tags; write selfheal.yaml."""
    from selfheal.ops.init import init as run_init

    for line in run_init(Path("."), force=args.force, artifact=args.artifact,
                         ask=_ask if args.interactive else None, add=args.add_artifact):
        print(line)


@command(option("--version", help="Version to restore: v0.0.3, model@v0.0.3 or v20241120_150000"),
         option("--current-metric", type=float, help="Metric of the current model (the guide's flag)"),
         option("--threshold", type=float, help="Threshold for --current-metric (default: the gate's)"),
         PARAMS, CONFIG, WAIT)
def rollback(args: argparse.Namespace) -> None:
    """Restore the last good production model (auto) or --version V: a verified checkout from git + DVC."""
    from selfheal.healing.actions import reloader
    from selfheal.versions.rollback import rollback as run_rollback

    with _acting("rollback", args) as project:
        threshold = args.threshold
        if args.current_metric is not None and threshold is None:
            own = project.params  # our pipeline's threshold, else the gate's bound
            threshold = own.model_validation.min_accuracy_threshold if own else project.gate.bound
        run_rollback(project, version=args.version, current_metric=args.current_metric, threshold=threshold,
                     reload=reloader(project))


@command(option("--json", dest="as_json", action="store_true", help="Print JSON"))
def versions(args: argparse.Namespace) -> None:
    """List registered model versions (oldest first) and mark production."""
    import json

    from selfheal.core.project import current
    from selfheal.versions.catalog import Versions

    project = current()
    rows = Versions(project).rows()
    if args.as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no registered versions of {project.model.artifact} yet (a candidate that passes the gate is "
              "promoted by `selfheal heal`)")
    for r in rows:
        metric = (f"{r['metric_name']} {r['metric']:.3f}" if isinstance(r["metric"], (int, float))
                  else "-" if r["reachable"] else "unknown: outputs not reachable")
        print(f"{'*' if r['production'] else ' '} {r['tag']:<24} {r['alias'] or '-':<17} "
              f"{r['created_at']:<26} {metric:<12} {(r['md5'] or '-')[:12]}"
              + (f"  <- {project.gate.stage}" if r["production"] else ""))


@command(WAIT, PARAMS, CONFIG,
         option("--accept-schema-change", action="store_true",
                help="Promote a model whose input columns or types differ from production's"),
         switch("--force", "Promote even when the candidate fails the gate (the heal log records who overrode what)"))
def promote(args: argparse.Namespace) -> None:
    """Promote the workspace candidate that passes the gate: push to the DVC remote, commit, tag, set production."""
    from selfheal.healing.actions import reloader
    from selfheal.versions.promote import promote as run_promote

    reason = "promoted by `selfheal promote`" + (" --accept-schema-change" if args.accept_schema_change else "") + (
        " --force" if args.force else "")
    with _acting("promote", args) as project:
        run_promote(project, reason=reason, reload=reloader(project),
                    accept_schema_change=args.accept_schema_change, force=args.force, by_person=True)


@command(option("--drift-detected", action="store_true",
                help="Drift was detected (seed flag; without a score: above the threshold)"),
         option("--drift-score", type=float, help="Drift score (seed flag); default: metrics/records/drift.json"),
         switch("--force", "Skip the retraining cooldown"), PARAMS, CONFIG, WAIT)
def retrain(args: argparse.Namespace) -> int:
    """Retrain on drift (cooldown permitting): fold the current batch in, dvc repro, then promote or roll back."""
    from selfheal.healing.retrain import retrain as run_retrain

    with _acting("retrain", args) as project:
        entry = run_retrain(project, drift_detected=args.drift_detected, drift_score=args.drift_score,
                            force=args.force)
    return 1 if entry is not None and not entry["success"] else 0


@command(option("--data-path", type=Path, help="CSV to fix in place (default: data.raw)"), PARAMS, CONFIG, WAIT)
def fix_data(args: argparse.Namespace) -> int:
    """Fix a CSV in place as the fix_data stage would (backup first); exit 1 if it is still invalid."""
    from selfheal.healing.filefix import fix_file
    from selfheal.pipeline.csvread import declared_text, prefetch

    _own_params(args.params, args.config)  # refused before the lock: a guarded project's heal fixes data.fix files
    with _acting("fix-data", args) as project:
        p = project.params
        assert p is not None
        path = args.data_path or Path(p.data.raw)
        entry = fix_file(path, p, prefetch(path, declared_text(p.data.columns)))  # the rest imports while it reads
    return 0 if entry["success"] else 1


@command(option("--plan", action="store_true", help="Print what heal would do and why; change nothing"),
         PARAMS, CONFIG, WAIT)
def heal(args: argparse.Namespace) -> int:
    """Fix data -> gate the model (promote / roll back) -> retrain on drift -> recover the service; escalate loops."""
    from selfheal.healing.heal import heal as run_heal

    if args.plan:
        return run_heal(_project(args.params, args.config), plan_only=True)
    with _acting("heal", args, settle=False) as project:
        return run_heal(project)


@command(option("--json", dest="as_json", action="store_true", help="Print JSON"))
def status(args: argparse.Namespace) -> None:
    """Self-healing success metrics from the audit logs; also written to metrics/self_healing.json."""
    import json

    from selfheal.core.project import current
    from selfheal.healing.status import lines, write_status

    project = current()
    metrics = write_status(project)
    print(json.dumps(metrics, indent=2) if args.as_json else
          "\n".join([*lines(metrics), f"(written to {project.record(workspace.SELF_HEALING)})"]))


@command(option("--faults", default="all", help="all, a group (data, model, drift, service, config) or fault names, "
                "comma-separated; only those that apply to this project"),
         option("--repeat", type=at_least_one, default=1, help="Trials per fault kind"),
         option("--seed", type=int, default=42, help="Seed of the fault injection (same seed, same faults)"),
         switch("--quick", "Small data and no MLflow: the CI-sized drill (our pipeline)"),
         option("--out", type=Path, help=f"Scorecard JSON (default: {workspace.DRILL}; .selfheal/drill.json in a "
                "guarded project)"),
         option("--card", type=Path, help=f"Scorecard Markdown (default: {workspace.DRILL_CARD}; .selfheal/drill.md "
                "in a guarded project)"),
         option("--keep", type=Path, help="Keep the throwaway copies in this (new) folder"),
         option("--busy", type=not_negative, default=0,
                help="CPU-bound processes to run throughout (a busy machine: e.g. one per core)"))
def drill(args: argparse.Namespace) -> int:
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
    chosen = select(args.faults, on.capabilities)
    out, card = args.out or on.config.record(workspace.DRILL), args.card or on.config.record(workspace.DRILL_CARD)
    scorecard = run_drill.run(Path.cwd(), chosen, on=on, repeat=args.repeat, seed=args.seed, quick=args.quick,
                              keep=args.keep, say=print, busy=args.busy)
    atomic.write_json(out, scorecard)
    atomic.write_text(card, markdown(scorecard))
    summary = scorecard["summary"]
    print(f"drill: {summary['passed']}/{summary['trials']} as expected; scorecard in {card} and {out}")
    return 0 if summary["passed"] == summary["trials"] else 1


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    """Every command with its arguments (the workflows' test parses their calls with it)."""
    root = argparse.ArgumentParser(prog="selfheal", description=DESCRIPTION, allow_abbrev=False)
    commands = root.add_subparsers(title="commands", metavar="COMMAND")
    for name, run, arguments in COMMANDS:
        doc = " ".join((run.__doc__ or "").split())
        summary = doc.split(". ")[0].split("; ")[0].rstrip(".")
        sub = commands.add_parser(name, help=summary, description=doc, formatter_class=_Help, allow_abbrev=False)
        for flags, settings in arguments:
            sub.add_argument(*flags, **settings)
        sub.set_defaults(run=run, usage=sub)
    return root


class _Output:
    """stdout for a reader that may go away (`selfheal heal | head`, a log pipe whose reader died): once the pipe
    is closed, output goes to /dev/null and the command finishes what it started (its logs are the record)
    instead of stopping mid-action with a traceback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())  # what is still buffered, and every later child, writes there
        os.close(null)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    from selfheal.core.alerts import check_webhook

    sys.stdout = _Output(sys.stdout)
    root = parser()
    args, unknown = root.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not hasattr(args, "run"):
        if unknown:
            root.error(f"unrecognized arguments: {' '.join(unknown)}")
        root.print_help()
        raise SystemExit(2)
    if unknown:  # said with the command's own usage line, not the root's
        args.usage.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        check_webhook()  # the configuration every command may alert through: checked before anything acts
        code = args.run(args)
    except SelfHealError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code or 0)


if __name__ == "__main__":
    main()
