"""Dates and times, which models cannot know."""

from __future__ import annotations

from datetime import UTC, datetime

from kernel.functions import kernel_function


@kernel_function
def now() -> str:
    """The current date and time in UTC, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@kernel_function
def today() -> str:
    """Today's date in UTC (YYYY-MM-DD)."""
    return datetime.now(UTC).date().isoformat()
