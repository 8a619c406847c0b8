"""Native functions of the `travel` plugin (this module joins the folder's plugin)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from kernel import kernel_function


@kernel_function
def trip_days(start: Annotated[str, "first day, YYYY-MM-DD"], end: Annotated[str, "last day, YYYY-MM-DD"]) -> int:
    """Number of days of a trip, both ends included."""
    return (date.fromisoformat(end) - date.fromisoformat(start)).days + 1
