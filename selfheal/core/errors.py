"""User-facing errors: one clear line, a non-zero exit, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class SelfHealError(Exception):
    """A problem the user can fix (bad input, bad config); printed as one line, never as a traceback."""

    exit_code = 2


class DataError(SelfHealError):
    """Input data that cannot be read or fixed: names the file (and column) and what was expected."""


class ConfigError(SelfHealError):
    """A params.yaml / JSON config value that is unknown or of the wrong type."""


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run_main(main: Callable[[], int | None]) -> None:
    """Run an entry point; user errors become `error: ...` on stderr and exit code 2."""
    try:
        code = main()
    except SelfHealError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    raise SystemExit(code or 0)
