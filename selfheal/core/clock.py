"""Timestamps of the audit trail: UTC, second precision, ISO 8601. Pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """UTC timestamp, second precision, ISO 8601 with offset: sortable and unambiguous."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def parse_time(value: str) -> datetime:
    """Parse a log timestamp; the guide's naive timestamps are taken as UTC."""
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
