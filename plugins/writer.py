"""The `writer` plugin: summarize, translate, extract JSON by schema, classify.

`summarize` and `translate` are plain prompt functions in `plugins/prompts/writer/`
(the kernel's `.prompt` format). `extract_json` and `classify`
take their output shape as an argument (a JSON schema, a list of labels), so they are
native functions that build a prompt function with that `output_schema` and run it
through the injected kernel; the answer is checked before it is returned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from kernel.errors import ArgumentError, InvocationError
from kernel.functions import kernel_function
from kernel.kernel import Kernel
from kernel.prompts import InputVariable, PromptFunction

PLUGIN = "writer"

EXTRACT = """\
<message role="system">You extract data from text. Reply with one JSON object that follows this JSON schema:
{{ schema_text }}
Use null for a value the text does not give.</message>
<message role="user">{{ text }}</message>"""

CLASSIFY = """\
<message role="system">You classify texts. Answer with one JSON object {"label": ...} where label is exactly one of:
{% for label in labels %}- {{ label }}
{% endfor %}</message>
<message role="user">{{ text }}</message>"""


def prompt_folder() -> Path:
    """The folder of this plugin's prompt files (summarize, translate)."""
    return Path(__file__).parent / "prompts" / PLUGIN


@kernel_function
async def extract_json(
    text: Annotated[str, "the text to extract data from"],
    output_schema: Annotated[dict[str, Any], "JSON schema of the object to extract"],
    kernel: Kernel,
) -> dict[str, Any]:
    """Extract structured data from a text as a JSON object following a JSON schema."""
    schema = output_schema
    if schema.get("type", "object") != "object":
        raise ArgumentError("writer.extract_json", "output_schema", "must describe an object (type: object)")
    fn = PromptFunction(
        EXTRACT,
        name="extract_json",
        plugin_name=PLUGIN,
        output_schema=schema,
        execution_settings={"default": {"max_tokens": 512, "temperature": 0.0}},
    )
    # The kernel checks the answer against the schema (with one repair turn).
    result = await kernel.invoke(fn, text=text, schema_text=json.dumps(schema, ensure_ascii=False))
    return result.value  # type: ignore[no-any-return]


@kernel_function
async def classify(
    text: Annotated[str, "the text to classify"],
    labels: Annotated[list[str], "the allowed labels"],
    kernel: Kernel,
) -> str:
    """Classify a text into exactly one of the given labels."""
    choices = [label.strip() for label in labels if label.strip()]
    if len(choices) < 2:
        raise ArgumentError("writer.classify", "labels", "give at least two non-empty labels")
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": choices}},
        "required": ["label"],
        "additionalProperties": False,
    }
    fn = PromptFunction(
        CLASSIFY,
        name="classify",
        plugin_name=PLUGIN,
        output_schema=schema,
        input_variables=[InputVariable("labels", type="array"), InputVariable("text")],
        execution_settings={"default": {"max_tokens": 32, "temperature": 0.0}},
        check_output=False,  # near answers ("Question", "it is a question.") are mapped below
    )
    result = await kernel.invoke(fn, text=text, labels=choices)
    answer = result.value.get("label") if isinstance(result.value, dict) else result.value
    return match_label(str(answer), choices)


def match_label(answer: str, labels: list[str]) -> str:
    """The label the model meant: exact, else case-insensitive, else the only label it contains."""
    cleaned = answer.strip().strip("\"'.").strip()
    if cleaned in labels:
        return cleaned
    by_case = {label.lower(): label for label in labels}
    if cleaned.lower() in by_case:
        return by_case[cleaned.lower()]
    contained = [label for label in labels if label.lower() in cleaned.lower()]
    if len(contained) == 1:
        return contained[0]
    raise InvocationError(f"writer.classify: the model answered {answer!r}, which is not one of {labels}")
