"""SK's TextMemoryPlugin `recall`, with a fixed answer, for the conformance cases."""

from kernel import kernel_function


@kernel_function(description="Recall what memory holds about a question.")
def recall(question: str) -> str:
    return f"[recalled: {question}]"
