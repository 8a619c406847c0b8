"""SK's .NET sample DateTimeUtils, with a fixed answer."""

from kernel import kernel_function


@kernel_function(description="The current date and time in UTC.")
def GetCurrentDateTimeInUtc() -> str:
    return "2025-01-12 10:00:00Z"
