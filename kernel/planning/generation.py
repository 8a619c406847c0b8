"""Plan generation: from a goal to a validated plan (`create_plan`).

Generation asks a chat service for a plan with structured output (the plan's JSON schema
as `ChatRequest.output_schema`); a reply in plain text is parsed leniently (code fences
stripped, first JSON object taken). Every problem found by validation goes back to the
model in a repair request, up to `max_repairs` times. Valid plans are cached per kernel
(goal + allowed functions with their schemas + input names; see `cache`).

The schema gives each offered function its own argument schema; goal inputs are an enum.
For a service decoding under a grammar (profile `structured_output` `grammar` or
`json_object`: the local model, llama.cpp's server) it is *ordered*: `"output": "sN"`
first, then exactly N steps, step k named `sk` and referring only to `s1`..`s(k-1)`: even a
tiny model can only write a plan that validates (short of what a grammar cannot say).

The prompt fits the service's context when known (the model's `context_window`, else
`options.context_window` of the service), with room for the answer (`max_tokens`: from
`settings`, else 1024, at most a quarter of a small context), counted by the model's
`count_tokens` or estimated: shorter function descriptions, then no return types, then
fewer functions (those sharing words with the goal first); else a PlanError says what helps.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from ..contents import ChatMessage, ChatRequest
from ..errors import FunctionNotFoundError, KernelError, PlanError, PlanValidationError, ServiceNotFoundError
from ..functions import KernelFunction
from ..logging import LazyLogger
from .cache import PlanCache, plan_cache
from .model import Plan
from .validation import return_schema_of

if TYPE_CHECKING:
    from ..kernel import Kernel

__all__ = [
    "DEFAULT_PLAN_TOKENS",
    "PlanOptions",
    "create_plan",
    "describe_function",
    "describe_inputs",
    "parse_reply",
    "plan_schema",
    "planning_messages",
    "rank_functions",
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

def _ref_schemas(step_ids: dict[str, Any] | None, inputs: Collection[str] | None = None,
                 path: bool = True) -> list[dict[str, Any]]:
    """An argument's references: a goal input (any name when `inputs` is None, else one of
    them) and an earlier step (none when `step_ids` is None)."""
    refs: list[dict[str, Any]] = []
    if inputs is None or inputs:
        name: dict[str, Any] = {"type": "string"} if inputs is None else {"type": "string", "enum": list(inputs)}
        refs.append({"type": "object", "properties": {"$input": name}, "required": ["$input"],
                     "additionalProperties": False})
    if step_ids is not None:
        step: dict[str, Any] = {"$step": step_ids, **({"path": {"type": "string"}} if path else {})}
        refs.append({"type": "object", "properties": step, "required": ["$step"], "additionalProperties": False})
    return refs


def _argument_schema(fn: KernelFunction, step_ids: dict[str, Any] | None,
                     inputs: Collection[str] | None = None, path: bool = True) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    refs = _ref_schemas(step_ids, inputs, path)
    for p in fn.parameters:
        literal = {k: v for k, v in p.schema.items() if k not in ("default", "description", "$defs")}
        if "$ref" in literal:
            properties[p.name] = {}
        else:
            properties[p.name] = {"anyOf": [*refs, literal or {}]} if refs else literal
    return {
        "type": "object",
        "properties": properties,
        "required": [p.name for p in fn.parameters if p.required],
        "additionalProperties": False,
    }


def _ordered_schema(functions: Sequence[KernelFunction], max_steps: int,
                    inputs: Collection[str] | None) -> dict[str, Any]:
    """The plan by position: `"output": "sN"` first, then exactly N steps; step k is `sk`,
    calls one of `functions` with its own arguments, and refers only to `s1`..`s(k-1)`
    (whole results: no `path`). The steps are `$defs` shared by every N."""
    defs = {}
    for k in range(1, max_steps + 1):
        earlier = {"type": "string", "enum": [f"s{i}" for i in range(1, k)]} if k > 1 else None
        defs[f"step{k}"] = {"anyOf": [
            {"type": "object",
             "properties": {"id": {"const": f"s{k}"}, "function": {"const": fn.fully_qualified_name},
                            "arguments": _argument_schema(fn, earlier, inputs, path=False)},
             "required": ["id", "function", "arguments"], "additionalProperties": False}
            for fn in functions
        ]}
    return {
        "type": "object",
        "anyOf": [
            {"type": "object",
             "properties": {"output": {"const": f"s{n}"},
                            "steps": {"type": "array", "prefixItems": [{"$ref": f"#/$defs/step{k}"}
                                                                       for k in range(1, n + 1)],
                                      "minItems": n, "maxItems": n, "items": False}},
             "required": ["output", "steps"], "additionalProperties": False}
            for n in range(1, max_steps + 1)
        ],
        "$defs": defs,
    }


def plan_schema(functions: Sequence[KernelFunction], max_steps: int = 10, *, detailed: bool = True,
                inputs: Collection[str] | None = None, ordered: bool = False) -> dict[str, Any]:
    """The JSON schema of a plan reply. `detailed` gives each function's step its own
    argument schema (a literal of the parameter's type or a reference) and names the
    steps `s1`..`sN`, which lets grammar-constrained local models produce valid plans.
    `inputs`: the goal's input names (`{"$input": ...}` is then one of them, or absent);
    None allows any name. `ordered` (for grammar-constrained models): the output first,
    then that many steps in order, each referring only to earlier ones (see the module)."""
    if ordered and functions:
        return _ordered_schema(functions, max_steps, inputs)
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
                        "arguments": _argument_schema(fn, step_ids, inputs),
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


ORDERED_INSTRUCTIONS = """\
You are a planner. Turn the user's goal into a plan: the shortest list of function calls \
that reaches the goal. Use only the functions listed below, with exactly the parameters \
they declare.

Reply with one JSON object, in this form:
{{"output": "s1", "steps": [{{"id": "s1", "function": "plugin.function", "arguments": {{"param": VALUE}}}}]}}
where "output" is the id of the last step, whose result answers the goal.

Each argument VALUE is one of:
- a literal JSON value of the parameter's type, for example "French" or 3;
- {{"$input": "NAME"}}: the value of the goal input NAME;
- {{"$step": "ID"}}: the result of an earlier step.
Name the steps s1, s2, s3... in order. Use at most {max_steps} steps.

Functions:
{functions}"""

FULL, SHORT, BRIEF = 0, 1, 2
"""Detail of a function's description: everything (JSON schemas); a signature with types
and the first sentence; the same without the return type."""

_NOTES = frozenset({"description", "title", "examples", "default"})


def _type_text(schema: Any) -> str:
    """A short type: `number`, `array of string`, `one of "a", "b"`, else compact JSON."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if isinstance(schema.get("enum"), list):
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"array of {_type_text(schema['items'])}"
    if isinstance(kind, list) or (isinstance(kind, str) and kind != "object"):
        return " or ".join(map(str, kind)) if isinstance(kind, list) else kind
    if set(schema) <= {"type", "additionalProperties"}:
        return "object"
    return json.dumps({k: v for k, v in schema.items() if k not in _NOTES}, ensure_ascii=False)


def _first_sentence(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z(]|$)", text)  # not at "e.g. 'Monday'"
    first = match.group(1) if match else text
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."


def describe_function(fn: KernelFunction, detail: int = FULL) -> str:
    """One function of the planner's catalogue, at a level of detail (FULL, SHORT, BRIEF)."""
    returns = return_schema_of(fn)
    if detail == FULL:
        lines = [f"- {fn.fully_qualified_name}: {fn.description or '(no description)'}",
                 f"  parameters: {json.dumps(fn.parameters_schema, ensure_ascii=False)}"]
        if returns:
            lines.append(f"  returns: {json.dumps(returns, ensure_ascii=False)}")
        return "\n".join(lines)
    params = []
    for p in fn.parameters:
        default = "" if p.required or p.default is None else f" = {json.dumps(p.default, default=str)}"
        params.append(f"{p.name}{'' if p.required or default else '?'}: {_type_text(p.schema)}{default}")
    result = f" -> {_type_text(returns)}" if returns and detail < BRIEF else ""
    return f"- {fn.fully_qualified_name}({', '.join(params)}){result}: {_first_sentence(fn.description or '')}"


def describe_inputs(inputs: Mapping[str, Any]) -> str:
    if not inputs:
        return "Inputs: none"
    lines = ["Inputs (refer to them with {\"$input\": NAME}):"]
    for name, value in inputs.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"- {name}: {text if len(text) <= 200 else text[:197] + '...'}")
    return "\n".join(lines)


def planning_messages(goal: str, functions: Sequence[KernelFunction], inputs: Mapping[str, Any],
                      max_steps: int, *, system_message: bool = True, detail: int = FULL,
                      ordered: bool = False) -> list[ChatMessage]:
    """The planning conversation. `system_message=False` puts the instructions at the top
    of the user message instead, for models whose chat format drops system messages;
    `detail`: how much of each function is described; `ordered`: the instructions of the
    ordered schema (output first)."""
    catalogue = "\n".join(describe_function(fn, detail) for fn in functions) or "(none)"
    template = ORDERED_INSTRUCTIONS if ordered else PLANNER_INSTRUCTIONS
    system = template.format(max_steps=max_steps, functions=catalogue)
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


# --- fitting the prompt to the context ---------------------------------------------------------------

DEFAULT_PLAN_TOKENS = 1024  # the plan's max_tokens (room kept in a known context); <= 1/4 of a small one
MESSAGE_TOKENS = 8  # chat-format tokens around one message (turn markers), and the reply's
ESTIMATE_MARGIN = 1.15  # estimated counts (no tokenizer) raised by this much: JSON takes more than prose
_STOP_WORDS = frozenset({"a", "an", "and", "the", "of", "to", "in", "on", "for", "from", "with", "by", "into",
                         "at", "as", "is", "it", "its", "then", "than", "this", "that", "be", "or", "all",
                         "each", "every", "what", "which", "how", "do", "does", "given"})
TokenCounter = Callable[[str], Awaitable[int]]


def _words(text: str) -> set[str]:
    """Lower-case words of `text`, without stop words; a plural `s` dropped."""
    words = (w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP_WORDS)
    return {w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words}


def rank_functions(goal: str, functions: Sequence[KernelFunction],
                   inputs: Iterable[str] = ()) -> list[KernelFunction]:
    """`functions`, those sharing the most words with the goal first (a word of the name
    counts three times one of the description; parameters named like an input count
    too); ties keep their order."""
    wanted = _words(goal) | _words(" ".join(inputs))

    def score(fn: KernelFunction) -> int:
        name = _words(fn.fully_qualified_name.replace("_", " "))
        params = _words(" ".join(p.name.replace("_", " ") for p in fn.parameters))
        return 3 * len(wanted & name) + len(wanted & _words(fn.description or "")) + len(wanted & params)

    return sorted(functions, key=lambda fn: -score(fn))  # stable: ties keep their order


def _service_context(kernel: Kernel, service: str | None) -> tuple[str, Any, bool]:
    """(service name, the model, whether it decodes under a grammar); a service that cannot
    be built is left for the call to report (or to its fallbacks)."""
    name = service or kernel.services.default_name("chat")
    try:
        inner = kernel.services.chat(name).inner
    except KernelError:
        inner = None
    structured = getattr(getattr(inner, "profile", None), "structured_output", None)
    return name, inner, structured in ("grammar", "json_object")


async def _context_window(kernel: Kernel, name: str, model: Any, count: TokenCounter) -> int | None:
    """The model's `context_window` (read after counting, which may load the model and
    settle it), else `options.context_window` of the configured service, else None."""
    if getattr(model, "context_window", None) is not None:
        await count("")
        window = model.context_window
        if isinstance(window, int) and not isinstance(window, bool) and window > 0:
            return window
    try:
        value = kernel.services.service_settings(name, "chat").options.get("context_window")
    except ServiceNotFoundError:  # a service added in code
        return None
    if value is not None and (isinstance(value, bool) or not str(value).isdigit() or int(value) <= 0):
        raise PlanError(f"service {name!r}: options.context_window must be a number of tokens, not {value!r}")
    return None if value is None else int(value)


def _counter(model: Any) -> tuple[TokenCounter, bool]:
    """(count tokens, exact?): the model's `count_tokens` when it has one, else an estimate."""
    count = getattr(model, "count_tokens", None)
    if callable(count):

        async def exact(text: str) -> int:
            result = count(text)
            return int(await result if inspect.isawaitable(result) else result)

        return exact, True

    async def estimate(text: str) -> int:
        return math.ceil((len(text) + 3) // 4 * ESTIMATE_MARGIN)  # about four characters a token

    return estimate, False


async def _prompt_tokens(messages: Sequence[ChatMessage], count: TokenCounter) -> int:
    return sum([await count(m.content) for m in messages]) + MESSAGE_TOKENS * (len(messages) + 1)


class _NoFit(Exception):
    """Not even one function fits; `args[0]`: the tokens of the smallest prompt tried."""


async def _fit_prompt(goal: str, functions: Sequence[KernelFunction], inputs: Mapping[str, Any], max_steps: int,
                      *, budget: int, count: TokenCounter, system_message: bool = True, ordered: bool = False,
                      ) -> tuple[list[ChatMessage], list[KernelFunction], int]:
    """(messages, functions offered, tokens) within `budget`: all functions in full, else as
    signatures, else without return types, else as many as fit, most relevant first."""
    def build(fns: Sequence[KernelFunction], detail: int) -> list[ChatMessage]:
        return planning_messages(goal, fns, inputs, max_steps, system_message=system_message, detail=detail,
                                 ordered=ordered)

    for detail in (FULL, SHORT, BRIEF):
        messages = build(functions, detail)
        tokens = await _prompt_tokens(messages, count)
        if tokens <= budget:
            return messages, list(functions), tokens
    ranked = rank_functions(goal, functions, inputs)
    base = await _prompt_tokens(build([], BRIEF), count)
    total, chosen = base, []
    for fn in ranked:
        cost = await count(describe_function(fn, BRIEF)) + 1
        if total + cost > budget:
            break
        total += cost
        chosen.append(fn)
    while chosen:
        offered = [fn for fn in functions if fn in chosen]  # in their usual order
        messages = build(offered, BRIEF)
        tokens = await _prompt_tokens(messages, count)
        if tokens <= budget:
            return messages, offered, tokens
        chosen.pop()  # the least relevant
    raise _NoFit(base + await count(describe_function(ranked[0], BRIEF)) + 1 if ranked else base)


def _too_small(name: str, window: int, answer: int, needed: int, exact: bool) -> PlanError:
    return PlanError(
        f"planner: the planning prompt does not fit the context of service {name!r}: {window} tokens, {answer} "
        f"of them kept for the plan, leave {window - answer - MESSAGE_TOKENS}, and the goal with even one function "
        f"described briefly takes {'' if exact else 'about '}{needed}. What helps: offer fewer or smaller functions "
        f"(plugins=[...] or functions=[...]; `kernel plan --plugin NAME`), a shorter goal and inputs, a larger "
        f"context (options.n_ctx of a local model; options.context_window declares another service's), a "
        f"smaller settings max_tokens, or a bigger model")


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
    ordered_schema: bool | None


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
    ordered_schema: bool | None = None,
) -> Plan:
    """Ask a chat service for a plan toward `goal` and validate it.

    `inputs`: the goal's input variables (name -> value) the plan may reference;
    `plugins`/`functions`: the allowed functions (default: all); `settings`: execution
    settings of the planning request (`max_tokens`, `temperature`...); `system_message=False`
    sends the instructions in the user message (chat formats without a system role);
    `ordered_schema`: ask for the ordered plan schema (default: when the service decodes
    under a grammar). The prompt is fitted to the service's context when known (see the
    module). Invalid plans are sent back with their problems up to `max_repairs` times,
    then PlanValidationError lists every remaining problem.
    """
    if not goal.strip():
        raise PlanError("planner: the goal is empty")
    goal_inputs = dict(inputs or {})
    allowed = select_functions(kernel, plugins, functions)
    if not allowed:
        raise PlanError("planner: no functions to plan with (the allowed set is empty)")
    store = cache if cache is not None else plan_cache(kernel)
    key = PlanCache.key(goal, allowed, goal_inputs)

    def check(plan: Plan, names: Collection[str]) -> list[str]:
        return plan.problems(kernel, allowed=names, max_steps=max_steps, input_names=goal_inputs.keys())

    if use_cache:
        cached = store.get(key)
        if cached is not None:
            plan = Plan(goal, goal_inputs, cached.steps, cached.output)
            if not check(plan, frozenset(fn.fully_qualified_name for fn in allowed)):
                log.info("plan_cache_hit", goal_chars=len(goal), steps=len(plan.steps))
                return plan

    name, model, grammar = _service_context(kernel, service)
    ordered = grammar if ordered_schema is None else ordered_schema
    request_settings = dict(settings or {})
    offered, budget = allowed, 0
    count, exact = _counter(model)
    window = await _context_window(kernel, name, model, count)
    if window is not None:
        answer = request_settings["max_tokens"] = (request_settings.get("max_tokens")
                                                   or min(DEFAULT_PLAN_TOKENS, max(256, window // 4)))
        budget = window - int(answer) - MESSAGE_TOKENS
        try:
            messages, offered, tokens = await _fit_prompt(
                goal, allowed, goal_inputs, max_steps, budget=budget, count=count,
                system_message=system_message, ordered=ordered)
        except _NoFit as exc:
            raise _too_small(name, window, int(answer), int(exc.args[0]), exact) from None
        if len(offered) < len(allowed):
            log.warning("planner offers fewer functions: the prompt must fit the context", service=name,
                        context=window, offered=len(offered), allowed=len(allowed),
                        left_out=[fn.fully_qualified_name for fn in allowed if fn not in offered][:20])
        log.info("plan_prompt", service=name, context=window, tokens=tokens, exact=exact, functions=len(offered))
    else:
        messages = planning_messages(goal, allowed, goal_inputs, max_steps, system_message=system_message,
                                     ordered=ordered)
    offered_names = frozenset(fn.fully_qualified_name for fn in offered)
    head = len(messages)
    schema = plan_schema(offered, max_steps, detailed=detailed_schema, inputs=list(goal_inputs), ordered=ordered)
    problems: list[str] = []
    plan_or_none: Plan | None = None
    for attempt in range(max_repairs + 1):
        request = ChatRequest(list(messages), settings=dict(request_settings), output_schema=schema,
                              output_schema_name="plan")
        response = await kernel.complete(request, service)
        text = response.text
        plan_or_none = None
        try:
            data = parse_reply(text)
            if isinstance(data, Mapping):
                data = {k: v for k, v in data.items() if k not in ("goal", "inputs")}
            plan_or_none = Plan.from_dict(data, goal=goal, inputs=goal_inputs)
            problems = check(plan_or_none, offered_names)
        except PlanValidationError as exc:
            problems = exc.problems
        if not problems and plan_or_none is not None:
            log.info("plan_created", steps=len(plan_or_none.steps), repairs=attempt)
            if use_cache:
                store.put(key, plan_or_none)
            return plan_or_none
        log.info("plan_invalid", attempt=attempt, problems=len(problems))
        messages = [*messages[:head], ChatMessage.assistant(text), repair_message(problems)]
        if window is not None and await _prompt_tokens(messages, count) > budget:
            # the previous reply does not fit beside the prompt: send the problems alone
            messages = [*messages[:head], repair_message(problems[:20])]
    error = PlanValidationError(problems)
    error.plan = plan_or_none
    raise error
