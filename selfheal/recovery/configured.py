"""`selfheal recover` (and `--watch`, and heal's service step) for a configured project's service (selfheal.yaml).

An adapter, not a second ladder: it builds the parameters and the Target the ladder and the watch take from the
`service:` section. Health is the configured URL answering 200 (refused: down; no answer in time: hung; another
code: unhealthy). Steps: an unhealthy service that has a reload URL is reloaded first, then restarted; a down
or hung one is restarted with the configured start command (no shell; `{host}` and `{port}` from the health
URL). The foreign service cannot prove which project it belongs to on its health URL (ours reports a project
hash), so its identity is the pid file selfheal writes when it starts the command: a process is stopped only
when it is alive, was started at the recorded time, runs exactly the start command and in this project's
directory. Anything else on the port is left alone. Logs, alerts, the pid file and the service's output go to
the records directory.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from selfheal.core import workspace
from selfheal.core.config import ServiceRecoveryParams
from selfheal.core.errors import SelfHealError
from selfheal.core.project import Project, ServiceSection
from selfheal.recovery.restarts import AttemptFailed, CannotRecover, Records, restart_process
from selfheal.recovery.target import OWN, Target
from selfheal.service.client import Health, probe

METHODS = ("auto", "process", "reload")


def service_of(project: Project) -> ServiceSection:
    """The service section with a health URL; a one-line error saying what to add when there is none."""
    if project.service is None or project.service.health is None:
        raise SelfHealError("selfheal.yaml: service.health is not set: add the URL that answers 200 when the service "
                            "is healthy (and service.start, the command that starts it) to recover it")
    return project.service


def recovery_params(service: ServiceSection) -> ServiceRecoveryParams:
    """The ladder's parameters from the service section (no warm standby: a foreign command cannot be pre-warmed)."""
    assert service.health is not None  # service_of checked
    return ServiceRecoveryParams(
        service_url=service.health, start_command=service.start or "", warm_standby=False,
        health_timeout_seconds=service.health_timeout_seconds, startup_timeout_seconds=service.startup_timeout_seconds,
        max_recovery_attempts=service.max_recovery_attempts, kill_grace_seconds=service.kill_grace_seconds,
        watch_interval_seconds=service.watch_interval_seconds, watch_window_minutes=service.watch_window_minutes)


def steps(service: ServiceSection, method: str, state: str) -> list[str]:
    if method != "auto":
        return [method]
    return ["reload", "process"] if state == "unhealthy" and service.reload else ["process"]


def _reload(service: ServiceSection, url: str, sr: ServiceRecoveryParams) -> str:
    if service.reload is None:
        raise CannotRecover("service.reload is not set: nothing to reload")
    resp = _post(service.reload, sr)
    health = probe(url, sr.health_timeout_seconds)
    if not health.healthy:
        raise AttemptFailed(f"{resp}, but {health.detail}")
    return f"{resp}; {health.detail}"


def _post(url: str, sr: ServiceRecoveryParams) -> str:
    import requests

    try:
        resp = requests.post(url, timeout=sr.startup_timeout_seconds)
    except requests.RequestException as exc:
        raise AttemptFailed(f"reload {url} failed: {exc}") from None
    if not 200 <= resp.status_code < 300:
        raise AttemptFailed(f"reload {url} answered {resp.status_code}")
    return f"reloaded via {url}"


def _act(project: Project, root: Path, step: str, url: str, sr: ServiceRecoveryParams, health: Health) -> str:
    service = service_of(project)
    if step == "reload":
        return _reload(service, url, sr)
    if step == "process":
        if not sr.start_command:
            raise CannotRecover("service.start is not set: selfheal cannot start this service; add the start "
                                "command")
        return restart_process(url, sr, health, None, Records(root, project.record(workspace.PID_FILE),
                                                                project.record(workspace.SERVICE_LOG), probe,
                                                                own_pid_file=False))
    raise CannotRecover(f"--method {step}: a configured project's service knows {', '.join(METHODS)}")


def target(project: Project, root: Path = Path(".")) -> Target:
    """The ladder's Target for the project's service: its health URL, its steps, its records."""
    service = service_of(project)
    return Target(methods=METHODS, check=probe, steps=partial(steps, service), act=partial(_act, project, root),
                  log=project.record(workspace.RECOVERY_LOG), alerts=project.record(workspace.ALERTS_LOG))


def ladder(project: Project, root: Path = Path(".")) -> tuple[ServiceRecoveryParams, Target]:
    """The recovery ladder's parameters and Target for the project's service: our own service's (selfheal.yaml's
    service_recovery) or the one selfheal.yaml's service section names."""
    if (params := project.params) is not None:
        return params.service_recovery, OWN
    return recovery_params(service_of(project)), target(project, root)
