"""Dates and times, which models cannot know: now, today, time zones, date arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kernel.errors import ArgumentError
from kernel.functions import kernel_function


def _zone(function: str, parameter: str, name: str) -> tzinfo:
    if name.upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ArgumentError(
            function, parameter, f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')"
        ) from None


def _parse_datetime(function: str, parameter: str, value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ArgumentError(function, parameter, f"not an ISO 8601 date/time: {value!r}") from None


def _parse_date(function: str, parameter: str, value: str) -> date:
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise ArgumentError(function, parameter, f"not an ISO date (YYYY-MM-DD): {value!r}") from None


@kernel_function
def now(timezone: Annotated[str, "IANA time zone, e.g. 'Europe/Paris'"] = "UTC") -> str:
    """The current date and time, ISO 8601, in a time zone (default UTC)."""
    return datetime.now(_zone("time.now", "timezone", timezone)).isoformat(timespec="seconds")


@kernel_function
def today(timezone: Annotated[str, "IANA time zone"] = "UTC") -> str:
    """Today's date (YYYY-MM-DD) in a time zone (default UTC)."""
    return datetime.now(_zone("time.today", "timezone", timezone)).date().isoformat()


@kernel_function
def convert_timezone(
    timestamp: Annotated[str, "ISO 8601 date/time; without an offset it is read in from_timezone"],
    to_timezone: Annotated[str, "IANA time zone to convert to"],
    from_timezone: Annotated[str, "IANA time zone of a timestamp without offset"] = "UTC",
) -> str:
    """Convert a date/time to another time zone."""
    moment = _parse_datetime("time.convert_timezone", "timestamp", timestamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_zone("time.convert_timezone", "from_timezone", from_timezone))
    target = _zone("time.convert_timezone", "to_timezone", to_timezone)
    return moment.astimezone(target).isoformat(timespec="seconds")


@kernel_function
def add_days(
    day: Annotated[str, "a date, YYYY-MM-DD"],
    days: Annotated[int, "days to add (negative to go back)"],
) -> str:
    """The date a number of days after (or before) a date."""
    start = _parse_date("time.add_days", "day", day)
    try:
        return (start + timedelta(days=days)).isoformat()
    except OverflowError:
        raise ArgumentError("time.add_days", "days", "the result is outside the supported years 1-9999") from None


@kernel_function
def days_between(
    start: Annotated[str, "a date, YYYY-MM-DD"],
    end: Annotated[str, "a date, YYYY-MM-DD"],
) -> int:
    """The number of days from start to end (negative when end is earlier)."""
    return (_parse_date("time.days_between", "end", end) - _parse_date("time.days_between", "start", start)).days


@kernel_function
def weekday(day: Annotated[str, "a date, YYYY-MM-DD"]) -> str:
    """The day of the week of a date, e.g. 'Monday'."""
    return _parse_date("time.weekday", "day", day).strftime("%A")
