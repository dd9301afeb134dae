"""The drill's judge of a service trial: the outage measured from the outside (the load's requests and the
health probe), never from selfheal's logs, so a recovery faster than a poll is not "missed"."""

from __future__ import annotations

import time

import pytest

from selfheal.ops.trials import QUIET_S, Load, busy_machine

PROD = "p" * 32


def _load(timeline: list[tuple[float, bool]], probes: list[tuple[float, bool, str | None]]) -> Load:
    load = Load("http://127.0.0.1:9", {})
    load.timeline, load.probes = timeline, probes
    return load


def test_a_recovery_faster_than_a_poll_is_healed_in_zero_seconds() -> None:
    """A standby took over between two probes and no request failed: recovered, with its true time 0."""
    load = _load([(t / 10, True) for t in range(40)], [(t / 10, True, PROD) for t in range(40)])
    assert load.recovered_after(0.0, PROD, now=QUIET_S + 0.1) == 0.0
    assert load.recovered_after(0.0, PROD, now=QUIET_S - 0.1) is None  # not yet watched long enough


def test_a_hand_over_that_failed_one_request_is_timed_from_the_outside() -> None:
    timeline = [(0.0, True), (0.1, False), (0.25, True), (0.4, True)]
    load = _load(timeline, [(0.05, True, PROD), (0.3, True, PROD)])
    assert load.recovered_after(0.0, PROD, now=0.1 + QUIET_S + 0.01) == pytest.approx(0.25)
    assert load.last_failure(0.0) == 0.1


def test_down_or_serving_another_model_at_the_end_is_not_recovered() -> None:
    still_down = _load([(0.1, False), (3.0, False)], [(0.2, False, None)])
    assert still_down.recovered_after(0.0, PROD, now=10.0) is None
    wrong_model = _load([], [(0.1, False, None), (0.5, True, "c" * 32), (4.0, True, "c" * 32)])
    assert wrong_model.recovered_after(0.0, PROD, now=10.0) is None  # healthy, but not production's md5


def test_a_busy_machine_keeps_its_cpu_hogs_only_while_asked() -> None:
    import psutil

    before = {p.pid for p in psutil.process_iter()}
    with busy_machine(2):
        time.sleep(0.3)
        hogs = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in before
                and "while time.time() < end" in " ".join(p.info["cmdline"] or [])]
        assert len(hogs) == 2 and all(h.cpu_percent(0.2) > 20 for h in hogs)
    assert not any(psutil.pid_exists(h.pid) and h.status() != psutil.STATUS_ZOMBIE for h in hogs)
