"""The workspace contract: every file and folder the project reads or writes, named once, relative to its root.

Stages, healing actions, the service and the reports all take their paths from here; dvc.yaml declares the
same outputs (a test keeps the two in step). Input data paths are knobs, not contract: they live in params.yaml
(`data.raw`, `data.clean`, `data.current`). The audit logs keep the guide's file names for users coming from it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

# configuration and DVC's own files
PARAMS = Path("params.yaml")  # what the stages read
PROJECT_FILE = Path("selfheal.yaml")  # what selfheal reads (core/project.py)
DVC_YAML = Path("dvc.yaml")
DVC_LOCK = Path("dvc.lock")
EXP_GRID = Path("config/exp_grid.yaml")

# the model artifact (train), its drift reference and holdout (production is the registry: GTO tags in git)
MODEL = Path("models/model.joblib")
MODEL_META = Path("models/model.json")
REFERENCE = Path("models/reference.parquet")
HOLDOUT = Path("data/split/holdout.parquet")

# the metrics declared in dvc.yaml (committed to git): flat, numeric and few, so `dvc metrics show` and
# `dvc exp show` stay readable; floats rounded, so a seeded run writes the same bytes
DATA_QUALITY_METRICS = Path("metrics/data_quality.json")
TRAIN_METRICS = Path("metrics/train.json")
VALIDATION_METRICS = Path("metrics/validation.json")
DRIFT_METRICS = Path("metrics/drift.json")
METRICS = (DATA_QUALITY_METRICS, TRAIN_METRICS, VALIDATION_METRICS, DRIFT_METRICS)
# each stage's full record (plain `cache: false` outputs, committed to git): what selfheal reads. The data
# quality report per column, the gate's verdict with its reasons and model md5, the drift per column.
RECORDS = Path("metrics/records")
DATA_QUALITY = RECORDS / "data_quality.json"
VALIDATION = RECORDS / "validation.json"
DRIFT = RECORDS / "drift.json"
PREDICTIONS_PLOT = Path("metrics/plots/predictions.csv")
RESIDUALS_PLOT = Path("metrics/plots/residuals.csv")
DRIFT_PLOT = Path("metrics/plots/drift.csv")
DRIFT_REPORT = Path("monitoring/drift_report.html")  # `selfheal drift-report` (Evidently), for people: no DVC output (random ids)
SELF_HEALING = Path("metrics/self_healing.json")  # `selfheal status`
BENCH = Path("metrics/bench.json")  # `make bench`
DRILL = Path("metrics/drill.json")  # `selfheal drill`: the scorecard's data ...
DRILL_CARD = Path("metrics/drill.md")  # ... and its Markdown, for a PR comment

# the audit trail: the guide's log files
DATA_FIX_LOG = Path("monitoring/data_fix_log.json")
ROLLBACK_LOG = Path("models/rollback_log.json")
RETRAINING_LOG = Path(".github/triggers/retraining_log.json")
RECOVERY_LOG = Path("monitoring/recovery_log.json")
ALERTS_LOG = Path("monitoring/alerts.json")
HEAL_LOG = Path("monitoring/heal_log.json")

# selfheal's own state: the heal lock, backups, the service's pid file and log
STATE_DIR = Path(".selfheal")
HEAL_LOCK = STATE_DIR / "heal.lock"
HEAL_HOLDER = STATE_DIR / "heal.holder.json"
BACKUPS = STATE_DIR / "backups"
PID_FILE = STATE_DIR / "service.pid"
SERVICE_STOPPED = STATE_DIR / "service.stopped.json"  # a stop the operator asked for (SIGTERM/SIGINT)
SERVICE_LOG = STATE_DIR / "service.log"
WORKERS = STATE_DIR / "workers"  # {pid}.json per service worker: the model it serves (a reload waits for all)
SERVICE_METRICS = STATE_DIR / "service_metrics"  # the workers' Prometheus counts, summed by /metrics
# intents of rollback / promote / retrain / fix-data, recorded before they act (core/journal.py)
JOURNAL = STATE_DIR / "journal.json"
# one restarter at a time: the running `recover --watch` (pid, create time, host) and the restart lock
WATCHER = STATE_DIR / "watcher.json"
RESTART_LOCK = STATE_DIR / "restart.lock"
RESTART_HOLDER = STATE_DIR / "restart.holder.json"
# a configured project (selfheal.yaml) keeps the files above by name in its records directory, and these:
DATA_CHECKED = STATE_DIR / "data_checked.json"  # {path: md5} of data files last checked with nothing to fix
DRIFT_CHECKED = STATE_DIR / "drift.json"  # the last drift measurement and the md5s it was made on
FAILED_CANDIDATE = STATE_DIR / "failed_candidate.json"  # the last candidate that failed to build, and its inputs
REJECTED_PARAMS = STATE_DIR / "rejected_params.json"  # {params file: md5} of a candidate the gate rolled back
HELD_BACK = STATE_DIR / "held_back.json"  # {md5: version, by, at}: models a person rolled back from
ESCALATED = STATE_DIR / "escalated.json"  # {issue: reason, since} a person must acknowledge (core/escalation.py)

# `make report`
REPORT = Path("report.md")
REPORT_ASSETS = Path("report")
DVC_PLOTS = Path("dvc_plots")  # `dvc plots show` / `dvc plots diff` write here by default (gitignored)
PLOTS_TEMPLATE = Path(".dvc/plots/offline.html")  # their page with Vega inlined (`selfheal offline-plots`)

# DVC: the default remote (local-only, gitignored: a fresh clone cannot pull from it; set DVC_REMOTE_URL or
# `dvc remote add -d` for a shared one) and the raw data DVC versions beside the pipeline (`dvc add`)
DEFAULT_REMOTE = Path(".dvcstore")
REMOTE_URL_ENV = "DVC_REMOTE_URL"

# the folders selfheal writes to (besides the data folders named in params): where a killed atomic write may
# have left a temporary file behind
WRITTEN_DIRS = tuple(sorted({str(p.parent) for p in (MODEL, HOLDOUT, DATA_QUALITY, PREDICTIONS_PLOT, DRIFT_REPORT,
                                                     RETRAINING_LOG, JOURNAL)}))

# outside the project, beside the installed packages (a new environment makes its own): empty MLflow stores
# migrated once by that environment's MLflow; a new embedded store starts as a copy (selfheal.pipeline.tracking)
MLFLOW_TEMPLATES = Path(sys.prefix) / "share" / "selfheal"
# outside the project, private to the user (0700): the sockets, locks and logs of the warm interpreters the DVC
# stages fork from (selfheal.ops.stage_runner); TMPDIR moves it
PRELOAD_DIR = Path(tempfile.gettempdir()) / f"selfheal-preload-{os.getuid()}"


PROJECT_ID_ENV = "SELFHEAL_PROJECT_ID"


def project_id(root: str | Path = ".") -> str:
    """This project's identity, as its service reports it on /health: a hash of the root's absolute path.

    Heal, recover, promote and rollback compare it before trusting (or reloading, or restarting) the service at
    the configured URL, so another project's service on the same port is never mistaken for ours. A service in
    a container sees another path: set $SELFHEAL_PROJECT_ID to the same value on both sides.
    """
    return os.environ.get(PROJECT_ID_ENV) or hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


def inside(path: str | Path, outputs: Iterable[str | Path]) -> bool:
    """Whether `path` is one of `outputs` or lies in one of them (a DVC directory output holds its files)."""
    path = Path(path)
    return any(path == Path(out) or Path(out) in path.parents for out in outputs)
