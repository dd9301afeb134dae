"""The drill's trial machinery, one body for every project kind: the trial record, the subprocess environment,
the request load and health probe, `recover --watch` with timestamped output, running heal as production does,
and the outcome's classification from what was observed outside selfheal."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfheal.ops import sandbox
from selfheal.ops.faults import Fault

WATCH_DEADLINE_S = 30.0
LOAD_INTERVAL_S = 0.02
REQUEST_TIMEOUT_S = 2.0
# how long the service must answer without a failure before a trial calls it recovered: longer than a request's
# timeout, so a request already hanging at the start of the window has failed (and counted) by its end
QUIET_S = REQUEST_TIMEOUT_S + 0.5


@dataclass
class Trial:
    fault: str
    group: str
    expected: str
    repeat: int
    injected: str = ""
    detected: bool = False
    action: str = ""
    outcome: str = "missed"
    ok: bool = False
    time_to_detect_s: float | None = None
    time_to_recover_s: float | None = None
    requests: int = 0
    requests_failed: int = 0
    healthy_share: float | None = None  # of the health probes during a service trial
    end_state_good: bool = False
    end_state: list[str] = field(default_factory=list)  # what is wrong with it
    exit_code: int | None = None
    note: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)  # what the judge saw, for a trial not as expected


@contextlib.contextmanager
def busy_machine(workers: int, limit_s: float = 3600.0) -> Iterator[None]:
    """`workers` CPU-bound processes while the block runs (each also ends by itself after `limit_s`): how the
    drill tests itself on a busy machine."""
    code = f"import time\nend = time.time() + {limit_s}\nwhile time.time() < end:\n    pass\n"
    spinners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(workers)]
    try:
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def final_health(url: str, tries: int = 5) -> tuple[bool, str | None]:
    """(healthy, model md5) from a last health check with a generous timeout, tried a few times: the end state
    is judged on what the service answers, not on one probe that a busy machine made late."""
    import requests

    for _ in range(tries):
        try:
            resp = requests.get(url + "/health", timeout=5)
            if resp.status_code == 200:
                return True, resp.json().get("model_md5")
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.5)
    return False, None


def process_table(root: Path) -> list[str]:
    """The processes running in the trial's project ("pid command"), for the evidence of a trial."""
    import psutil

    target = str(root.resolve())
    rows = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline"]):
        if proc.info["cwd"] == target:
            rows.append(f"{proc.info['pid']} {' '.join(proc.info['cmdline'] or [])[:160]}")
    return rows


def selfheal_command() -> str:
    return str(Path(sys.executable).parent / "selfheal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Env:
    """The subprocess environment of a drill: the venv first on PATH, a git identity, MLflow as chosen."""

    def __init__(self, mlflow: bool) -> None:
        self.vars = {**sandbox.env(), **({} if mlflow else {"SELFHEAL_MLFLOW": "0"})}

    def run(self, argv: list[str], cwd: Path, timeout: float = 900) -> tuple[subprocess.CompletedProcess, float]:
        started = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, env=self.vars, capture_output=True, text=True, timeout=timeout)
        return proc, time.perf_counter() - started


class Load:
    """A steady request load on /predict (one record every LOAD_INTERVAL_S) and a health probe, in threads."""

    def __init__(self, url: str, record: dict[str, Any]) -> None:
        self.url, self.record = url, record
        self.requests = self.failed = 0
        self.probes: list[tuple[float, bool, str | None]] = []  # (monotonic, healthy, model md5)
        self.timeline: list[tuple[float, bool]] = []  # (monotonic start of a /predict request, it succeeded)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._load, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    def _load(self) -> None:
        import requests

        session = requests.Session()
        while not self._stop.wait(LOAD_INTERVAL_S):
            self.requests += 1
            started = time.monotonic()
            try:
                ok = session.post(self.url + "/predict", json=self.record, timeout=REQUEST_TIMEOUT_S).status_code == 200
            except requests.RequestException:
                ok = False
            self.failed += not ok
            self.timeline.append((started, ok))

    def _probe(self) -> None:
        import requests

        while not self._stop.wait(0.05):
            try:
                resp = requests.get(self.url + "/health", timeout=0.5)
                body = resp.json() if resp.status_code == 200 else {}
                self.probes.append((time.monotonic(), resp.status_code == 200, body.get("model_md5")))
            except (requests.RequestException, ValueError):
                self.probes.append((time.monotonic(), False, None))

    def recovered_after(self, t0: float, md5: str | None, now: float | None = None) -> float | None:
        """Seconds from t0 to the service answering again - the first succeeded request, or healthy probe serving
        `md5`, after the last failure of either - once it has answered without a failure for QUIET_S; 0.0 when
        nothing failed (a recovery faster than a poll, or a hand-over to a standby); None while not recovered.
        Measured from the outside only: the load's own timeline and the health probe."""
        events = sorted([(w, ok) for w, ok in self.timeline if w >= t0]
                        + [(w, healthy and (md5 is None or served == md5)) for w, healthy, served in self.probes
                           if w >= t0])
        failures = [w for w, ok in events if not ok]
        last = failures[-1] if failures else t0
        back = next((w for w, ok in events if ok and w > last), None)
        if back is None or (now if now is not None else time.monotonic()) - last < QUIET_S:
            return None
        return round(back - t0, 3) if failures else 0.0

    def last_failure(self, t0: float) -> float | None:
        """Seconds from t0 to the start of the last failed request, for the evidence of a trial."""
        failed = [w for w, ok in self.timeline if w >= t0 and not ok]
        return round(failed[-1] - t0, 3) if failed else None


class HealthPolls(Load):
    """A health URL polled every 50 ms, for a service without our /predict to load (a configured project's)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, {})

    def _load(self) -> None:
        return

    def _probe(self) -> None:
        import requests

        while not self._stop.wait(0.05):
            try:
                healthy = requests.get(self.url, timeout=0.5).status_code == 200
            except requests.RequestException:
                healthy = False
            self.probes.append((time.monotonic(), healthy, None))


class Watcher:
    """`selfheal recover --watch` with its output timestamped as it arrives (detection = its first failure line)."""

    def __init__(self, root: Path, env: Env) -> None:
        self.lines: list[tuple[float, str]] = []
        self.proc = subprocess.Popen([selfheal_command(), "recover", "--watch"], cwd=root, env=env.vars, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def first(self, text: str, after: float) -> float | None:
        return next((t for t, line in self.lines if t >= after and text in line), None)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the watcher watches, and its warm standby (if it keeps one) is ready: a watcher in production
        runs long before a fault comes (a crash right after a recovery is measured by the service benchmark)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._ready():
            time.sleep(0.1)

    def _ready(self) -> bool:
        watching = next((line for _, line in self.lines if line.startswith("Watching ")), None)
        if watching is None:
            return False
        return "warm standby" not in watching or any(line.startswith("Warm standby ready") for _, line in self.lines)


def classify(fault: Fault, t: Trial, *, prod_changed: bool, new_versions: bool, fixed: bool, acted: bool) -> str:
    """The trial's outcome from what was observed (see the module docstring)."""
    if not t.end_state_good:
        return "wrong" if acted else "missed"
    escalated = t.exit_code not in (0, None)
    if fault.expected == "left_alone":
        if new_versions or prod_changed or acted:
            return "wrong"
        return "escalated" if escalated else "left_alone"
    if fault.expected == "escalated":
        if prod_changed or new_versions:
            return "wrong"
        return "escalated" if escalated else "missed"
    if escalated:
        return "escalated"
    return "healed" if fixed else "missed"


def unsettled(plan: str) -> list[str]:
    """The lines of `selfheal heal --plan` heal would act on, or refuses: a steady baseline has none (a step left
    as it is, such as drift already in the batch within the retrain cooldown, is steady)."""
    return [line for line in plan.splitlines()
            if line.startswith("  ") and len(line.split()) > 2 and line.split()[2] not in ("ok", "skip")]


def heal_actions(stdout: str) -> list[str]:
    """The actions heal took, from its `heal: <step>: <action>: <reason>` lines."""
    acts = []
    for line in stdout.splitlines():
        parts = line.split(": ")
        if line.startswith("heal: ") and len(parts) >= 3 and parts[2] not in ("skip", "ok", "done", "FAILED"):
            acts.append(parts[2])
    return list(dict.fromkeys(acts))


def heal(t: Trial, root: Path, env: Env) -> None:
    """What production runs: `selfheal heal --plan` (when the problem is detected), then `selfheal heal`."""
    plan, seconds = env.run([selfheal_command(), "heal", "--plan"], root)
    t.detected = plan.returncode != 0 or bool(unsettled(plan.stdout))
    t.time_to_detect_s = round(seconds, 3)
    done, seconds = env.run([selfheal_command(), "heal"], root)
    t.exit_code, t.time_to_recover_s = done.returncode, round(seconds, 2)
    t.action = ",".join(heal_actions(done.stdout)) or ("error" if done.returncode else "")
    t.note = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""])[-1][:200]


def watch(t: Trial, watcher: Watcher, load: Load, t0: float, prod_md5: str | None) -> None:
    """Wait for `recover --watch` to bring the service back (serving production's model), and time it."""
    deadline = time.monotonic() + WATCH_DEADLINE_S
    while time.monotonic() < deadline and load.recovered_after(t0, prod_md5) is None:
        time.sleep(0.05)
    recovered = load.recovered_after(t0, prod_md5)
    detected_at = watcher.first("Health check failed", t0)
    t.detected, t.action = detected_at is not None, "recover" if detected_at is not None else ""
    t.time_to_detect_s = round(detected_at - t0, 3) if detected_at is not None else None
    t.time_to_recover_s = round(recovered, 3) if recovered is not None else None
    t.exit_code = watcher.proc.poll()


def conclude(fault: Fault, t: Trial, *, prod_changed: bool, new_versions: bool, fixed: bool) -> None:
    """Set the trial's outcome from its end state (already filled in) and what changed."""
    t.end_state_good = not t.end_state
    acted = bool(t.action) and t.action != "error"
    t.outcome = classify(fault, t, prod_changed=prod_changed, new_versions=new_versions, fixed=fixed, acted=acted)
    t.ok = t.outcome == fault.expected
