"""Plan generation: from a goal to a validated plan (`create_plan`).

Generation asks a chat service for a plan with structured output (the plan's JSON schema
as `ChatRequest.output_schema`); a reply in plain text is parsed leniently (code fences
stripped, first JSON object taken). Every problem found by validation goes back to the
model in a repair request, up to `max_repairs` times. Valid plans are cached per kernel
(goal + allowed functions with their schemas + input names; see `cache`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from ..contents import ChatMessage, ChatRequest
from ..errors import FunctionNotFoundError, PlanError, PlanValidationError
from ..functions import KernelFunction
from ..logging import LazyLogger
from .cache import PlanCache, plan_cache
from .model import Plan
from .validation import return_schema_of

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "PlanOptions",
    "create_plan",
    "describe_inputs",
    "parse_reply",
    "plan_schema",
    "planning_messages",
    "select_functions",
]

log = LazyLogger("kernel.planning")

# --- choosing functions ---------------------------------------------------------------------------


def select_functions(kernel: Kernel, plugins: Iterable[str] | None = None,
                     functions: Iterable[str | KernelFunction] | None = None) -> list[KernelFunction]:
    """The functions a plan may use: all of them (both None), or those of `plugins` plus
    the named `functions`."""
    if plugins is None and functions is None:
        return kernel.functions()
    selected: dict[str, KernelFunction] = {}
    for plugin in plugins or ():
        if plugin not in kernel.plugins:
            raise FunctionNotFoundError(
                f"planner: no plugin named {plugin!r} (plugins: {', '.join(sorted(kernel.plugins)) or 'none'})"
            )
        for fn in kernel.plugins[plugin]:
            selected[fn.fully_qualified_name] = fn
    for item in functions or ():
        fn = item if isinstance(item, KernelFunction) else kernel.get_function(item)
        selected[fn.fully_qualified_name] = fn
    return list(selected.values())


# --- the planning request -----------------------------------------------------------------------

def _ref_schemas(step_ids: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"type": "object", "properties": {"$input": {"type": "string"}}, "required": ["$input"],
         "additionalProperties": False},
        {"type": "object", "properties": {"$step": step_ids, "path": {"type": "string"}},
         "required": ["$step"], "additionalProperties": False},
    ]


def _argument_schema(fn: KernelFunction, step_ids: dict[str, Any]) -> dict[str, Any]:
    properties = {}
    refs = _ref_schemas(step_ids)
    for p in fn.parameters:
        literal = {k: v for k, v in p.schema.items() if k not in ("default", "description", "$defs")}
        properties[p.name] = {"anyOf": [*refs, literal or {}]} if "$ref" not in literal else {}
    return {
        "type": "object",
        "properties": properties,
        "required": [p.name for p in fn.parameters if p.required],
        "additionalProperties": False,
    }


def plan_schema(functions: Sequence[KernelFunction], max_steps: int = 10, *, detailed: bool = True) -> dict[str, Any]:
    """The JSON schema of a plan reply. `detailed` gives each function's step its own
    argument schema (a literal of the parameter's type or a reference) and names the
    steps `s1`..`sN`, which lets grammar-constrained local models produce valid plans."""
    step_ids: dict[str, Any] = {"type": "string"}
    if detailed:
        step_ids = {"type": "string", "enum": [f"s{i}" for i in range(1, max_steps + 1)]}
    step_base = {"id": step_ids, "description": {"type": "string"}}
    if detailed and functions:
        step: dict[str, Any] = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "id": step_base["id"],
                        "function": {"type": "string", "enum": [fn.fully_qualified_name]},
                        "arguments": _argument_schema(fn, step_ids),
                        "description": step_base["description"],
                    },
                    "required": ["id", "function", "arguments"],
                    "additionalProperties": False,
                }
                for fn in functions
            ]
        }
    else:
        step = {
            "type": "object",
            "properties": {
                "id": step_base["id"],
                "function": {"type": "string", "enum": [fn.fully_qualified_name for fn in functions]}
                if functions else {"type": "string"},
                "arguments": {"type": "object"},
                "description": step_base["description"],
            },
            "required": ["id", "function", "arguments"],
        }
    return {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": max_steps},
            "output": step_ids,
        },
        "required": ["steps", "output"],
        "additionalProperties": False,
    }


PLANNER_INSTRUCTIONS = """\
You are a planner. Turn the user's goal into a plan: a short list of function calls whose \
results combine into the answer. Use only the functions listed below, with exactly the \
parameters they declare (every required one, no others).

Reply with one JSON object and nothing else, in this form:
{{"steps": [{{"id": "s1", "function": "plugin.function", "arguments": {{"param": VALUE}}, \
"description": "what this step does"}}], "output": "s1"}}
where "output" is the id of the step whose result answers the goal.

Each argument VALUE is one of:
- a literal JSON value of the parameter's type, for example "French" or 3;
- {{"$input": "NAME"}}: the value of the goal input NAME;
- {{"$step": "ID"}}: the result of an EARLIER step; {{"$step": "ID", "path": "field.sub"}} \
reads one field of a structured (object) result.
Name the steps s1, s2, s3... in order. A step may only refer to steps before it. Steps \
that do not depend on each other run in parallel. Use at most {max_steps} steps.

Functions:
{functions}"""


def describe_function(fn: KernelFunction) -> str:
    lines = [f"- {fn.fully_qualified_name}: {fn.description or '(no description)'}",
             f"  parameters: {json.dumps(fn.parameters_schema, ensure_ascii=False)}"]
    returns = return_schema_of(fn)
    if returns:
        lines.append(f"  returns: {json.dumps(returns, ensure_ascii=False)}")
    return "\n".join(lines)


def describe_inputs(inputs: Mapping[str, Any]) -> str:
    if not inputs:
        return "Inputs: none"
    lines = ["Inputs (refer to them with {\"$input\": NAME}):"]
    for name, value in inputs.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"- {name}: {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)


def planning_messages(goal: str, functions: Sequence[KernelFunction], inputs: Mapping[str, Any],
                      max_steps: int, *, system_message: bool = True) -> list[ChatMessage]:
    """The planning conversation. `system_message=False` puts the instructions at the top
    of the user message instead, for models whose chat format drops system messages."""
    catalogue = "\n".join(describe_function(fn) for fn in functions) or "(none)"
    system = PLANNER_INSTRUCTIONS.format(max_steps=max_steps, functions=catalogue)
    user = f"Goal: {goal}\n{describe_inputs(inputs)}"
    if not system_message:
        return [ChatMessage.user(f"{system}\n\n{user}")]
    return [ChatMessage.system(system), ChatMessage.user(user)]


def repair_message(problems: Sequence[str]) -> ChatMessage:
    listed = "\n".join(f"- {p}" for p in problems)
    return ChatMessage.user(
        f"That plan has these problems:\n{listed}\n"
        "Return the corrected complete plan as one JSON object, in the same form."
    )


def parse_reply(text: str) -> Any:
    """The JSON value of a model's reply: the whole text, else inside code fences, else
    the first JSON object in it."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        pass
    if "```" in stripped:
        inner = stripped.split("```", 2)[1]
        inner = inner.split("\n", 1)[1] if "\n" in inner and not inner.lstrip().startswith("{") else inner
        try:
            return json.loads(inner)
        except json.JSONDecodeError:
            pass
    decoder = json.JSONDecoder()
    start = stripped.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(stripped, start)
            return value
        except json.JSONDecodeError:
            start = stripped.find("{", start + 1)
    shown = stripped if len(stripped) <= 120 else stripped[:117] + "..."
    raise PlanValidationError([f"the reply is not a JSON plan: {shown!r}"])


# --- generation -----------------------------------------------------------------------------------


class PlanOptions(TypedDict, total=False):
    """The options of `Kernel.plan` / `create_plan`."""

    inputs: Mapping[str, Any] | None
    plugins: Iterable[str] | None
    functions: Iterable[str | KernelFunction] | None
    service: str | None
    max_steps: int
    max_repairs: int
    use_cache: bool
    cache: PlanCache | None
    settings: Mapping[str, Any] | None
    detailed_schema: bool
    system_message: bool


async def create_plan(
    kernel: Kernel,
    goal: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    plugins: Iterable[str] | None = None,
    functions: Iterable[str | KernelFunction] | None = None,
    service: str | None = None,
    max_steps: int = 10,
    max_repairs: int = 2,
    use_cache: bool = True,
    cache: PlanCache | None = None,
    settings: Mapping[str, Any] | None = None,
    detailed_schema: bool = True,
    system_message: bool = True,
) -> Plan:
    """Ask a chat service for a plan toward `goal` and validate it.

    `inputs`: the goal's input variables (name -> value) the plan may reference;
    `plugins`/`functions`: the allowed functions (default: all); `settings`: execution
    settings of the planning request (`max_tokens`, `temperature`...); `system_message=False`
    sends the instructions in the user message (chat formats without a system role). Invalid plans are
    sent back with their problems up to `max_repairs` times, then PlanValidationError
    lists every remaining problem.
    """
    if not goal.strip():
        raise PlanError("planner: the goal is empty")
    goal_inputs = dict(inputs or {})
    allowed = select_functions(kernel, plugins, functions)
    if not allowed:
        raise PlanError("planner: no functions to plan with (the allowed set is empty)")
    allowed_names = frozenset(fn.fully_qualified_name for fn in allowed)
    store = cache if cache is not None else plan_cache(kernel)
    key = PlanCache.key(goal, allowed, goal_inputs)

    def check(plan: Plan) -> list[str]:
        return plan.problems(kernel, allowed=allowed_names, max_steps=max_steps, input_names=goal_inputs.keys())

    if use_cache:
        cached = store.get(key)
        if cached is not None:
            plan = Plan(goal, goal_inputs, cached.steps, cached.output)
            if not check(plan):
                log.info("plan_cache_hit", goal_chars=len(goal), steps=len(plan.steps))
                return plan

    messages = planning_messages(goal, allowed, goal_inputs, max_steps, system_message=system_message)
    head = len(messages)
    schema = plan_schema(allowed, max_steps, detailed=detailed_schema)
    problems: list[str] = []
    plan_or_none: Plan | None = None
    for attempt in range(max_repairs + 1):
        request = ChatRequest(list(messages), settings=dict(settings or {}), output_schema=schema,
                              output_schema_name="plan")
        response = await kernel.complete(request, service)
        text = response.text
        plan_or_none = None
        try:
            data = parse_reply(text)
            if isinstance(data, Mapping):
                data = {k: v for k, v in data.items() if k not in ("goal", "inputs")}
            plan_or_none = Plan.from_dict(data, goal=goal, inputs=goal_inputs)
            problems = check(plan_or_none)
        except PlanValidationError as exc:
            problems = exc.problems
        if not problems and plan_or_none is not None:
            log.info("plan_created", steps=len(plan_or_none.steps), repairs=attempt)
            if use_cache:
                store.put(key, plan_or_none)
            return plan_or_none
        log.info("plan_invalid", attempt=attempt, problems=len(problems))
        messages = [*messages[:head], ChatMessage.assistant(text), repair_message(problems)]
    error = PlanValidationError(problems)
    error.plan = plan_or_none
    raise error
