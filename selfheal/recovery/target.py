"""What a recovery acts on: this project's own service (the default), or a configured project's (selfheal.yaml).

The ladder, the watch and the turns are the same for both; only these differ: how health is checked (ours
proves the project's identity on /health; a foreign service only answers its health URL), which steps exist
and how they act (recovery/configured.py), and where the attempts and alerts are logged (a configured project
keeps them in its records directory, never in its own folders).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfheal.core import workspace
from selfheal.core.config import ServiceRecoveryParams
from selfheal.service.client import Health, check_health


@dataclass(frozen=True)
class Target:
    methods: tuple[str, ...] = ("auto", "cache", "config", "process", "docker")  # what `--method` may name
    check: Callable[[str, float], Health] = check_health  # (url, timeout) -> Health
    steps: Callable[[str, str], list[str]] | None = None  # (method, state) -> steps; None: the built-in ladder
    act: Callable[[str, str, ServiceRecoveryParams, Health], str] | None = None  # None: the built-in steps
    log: Path = workspace.RECOVERY_LOG
    alerts: Path = workspace.ALERTS_LOG


OWN = Target()
