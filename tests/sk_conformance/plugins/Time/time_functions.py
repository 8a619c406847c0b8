"""Time functions with fixed answers (SK's TimePlugin names), for the conformance cases."""

from kernel import kernel_function


@kernel_function(description="Today's date.")
def date() -> str:
    return "Sunday, 12 January, 2025"


@kernel_function(description="The current year.")
def year() -> str:
    return "2025"
