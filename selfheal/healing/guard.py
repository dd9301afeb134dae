"""Guards around every healing action: one actor at a time (a lock), and a backup before data is changed.

The lock is selfheal.core.locks' OS file lock: a killed heal never blocks the next one, and the one that waits
is told who holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from selfheal.core import locks, workspace
from selfheal.core.errors import SelfHealError


class Busy(SelfHealError):
    """Another heal, rollback, promotion or retrain holds the lock."""

    exit_code = 3


@contextmanager
def exclusive(what: str, wait: float = 0.0) -> Iterator[None]:
    """Hold the project's healing lock for `what`; wait up to `wait` seconds, then exit clearly."""
    acquired = False
    try:
        with locks.hold(workspace.HEAL_LOCK, workspace.HEAL_HOLDER, what, wait):
            acquired = True
            yield
    except locks.Held as exc:
        if acquired:  # another lock, taken inside the action
            raise
        raise Busy(
            f"{workspace.HEAL_LOCK}: another selfheal action is running ({locks.describe(exc.holder)}); "
            f"nothing was changed - retry later or pass --wait SECONDS"
        ) from None
