"""The plan data model: goal, inputs, steps, references; JSON form; validation.

A plan is plain data a person can read, edit and replay. Its canonical JSON form:

    {
      "goal": "Summarize the file in French and count its words",
      "inputs": {"name": "report.txt"},
      "steps": [
        {"id": "s1", "function": "files.read_text", "arguments": {"name": {"$input": "name"}}},
        {"id": "s2", "function": "writer.summarize", "arguments": {"text": {"$step": "s1"}}},
        {"id": "s3", "function": "writer.translate",
         "arguments": {"text": {"$step": "s2"}, "language": "French"}},
        {"id": "s4", "function": "text.count_words", "arguments": {"text": {"$step": "s1"}}}
      ],
      "output": "s3"
    }

An argument value is one of:

* a literal JSON value (`"French"`, `3`, `[1, 2]`, `{"a": 1}`);
* `{"$input": "name"}`: the value of the goal input `name`;
* `{"$step": "s1"}`: the output of the earlier step `s1`; `{"$step": "s1", "path": "summary.title"}`
  reads a field of a structured output (dict keys, list indexes; JSON text is parsed first);
* `{"$value": ...}`: an escaped literal, for a literal object that itself has a `$input`
  or `$step` key.

`output` is a step id, or `{"$step": "s3", "path": "..."}`; absent, the last step's output.
On reading (`Plan.from_dict`), the string shorthands `"$s1"`, `"$s1.summary.title"` and
`"$input.name"` are accepted as references too (a literal string of that shape must be
written `{"$value": "$s1"}`); `to_json()` always writes the object form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import FunctionNotFoundError, PlanValidationError

if TYPE_CHECKING:
    from .functions import KernelFunction
    from .kernel import Kernel
    from .planner import PlanRun

INPUT_KEY = "$input"
STEP_KEY = "$step"
VALUE_KEY = "$value"
PATH_KEY = "path"

_SHORTHAND = re.compile(r"^\$(?P<id>[A-Za-z_][A-Za-z0-9_-]*)(?:\.(?P<path>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*))?$")


@dataclass(frozen=True, slots=True)
class InputRef:
    """A reference to a goal input."""

    name: str

    def to_json(self) -> dict[str, Any]:
        return {INPUT_KEY: self.name}

    def __str__(self) -> str:
        return f"<input.{self.name}>"


@dataclass(frozen=True, slots=True)
class StepRef:
    """A reference to a step's output, optionally to a field path inside it."""

    step: str
    path: str | None = None

    @property
    def segments(self) -> list[str]:
        return self.path.split(".") if self.path else []

    def to_json(self) -> dict[str, Any]:
        return {STEP_KEY: self.step, PATH_KEY: self.path} if self.path else {STEP_KEY: self.step}

    def __str__(self) -> str:
        return f"<{self.step}.{self.path}>" if self.path else f"<{self.step}>"


Ref = InputRef | StepRef


@dataclass(slots=True)
class Step:
    """One function call of a plan. `arguments` values are literals or `Ref`s."""

    id: str
    function: str
    arguments: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def references(self) -> list[tuple[str, Ref]]:
        return [(name, value) for name, value in self.arguments.items() if isinstance(value, InputRef | StepRef)]

    def dependencies(self) -> set[str]:
        return {ref.step for _, ref in self.references() if isinstance(ref, StepRef)}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "function": self.function,
            "arguments": {name: _arg_to_json(value) for name, value in self.arguments.items()},
        }
        if self.description:
            data["description"] = self.description
        return data

    def __str__(self) -> str:
        args = ", ".join(f"{name}={_show(value)}" for name, value in self.arguments.items())
        return f"{self.id} = {self.function}({args})"


@dataclass(slots=True)
class Plan:
    """A goal, its inputs (name -> value), the steps and which output answers the goal
    (`output`: a StepRef, or a step id / `"s3.field.path"` string; None: the last step)."""

    goal: str
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    output: StepRef | None = None

    def __post_init__(self) -> None:
        if isinstance(self.output, str):  # "s3", "$s3" or "s3.summary.title"
            step_id, _, path = self.output.removeprefix("$").partition(".")
            self.output = StepRef(step_id, path or None)

    # -- access ----------------------------------------------------------------------------

    @property
    def output_ref(self) -> StepRef | None:
        """The reference whose value is the answer (default: the last step)."""
        if self.output is not None:
            return self.output
        return StepRef(self.steps[-1].id) if self.steps else None

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def with_inputs(self, inputs: Mapping[str, Any] | None) -> Plan:
        """A copy with these input values (steps shared: plans are not mutated in place)."""
        merged = {**self.inputs, **(inputs or {})}
        return Plan(self.goal, merged, list(self.steps), self.output)

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "goal": self.goal,
            "inputs": dict(self.inputs),
            "steps": [step.to_dict() for step in self.steps],
        }
        if self.output is not None:
            data["output"] = self.output.step if self.output.path is None else self.output.to_json()
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, default=str)

    @classmethod
    def from_dict(cls, data: Any, *, goal: str | None = None, inputs: Mapping[str, Any] | None = None) -> Plan:
        """Read a plan; structural problems (not the kind of value expected where it is)
        raise PlanValidationError listing every one. `goal`/`inputs` fill in absent keys."""
        problems: list[str] = []
        if not isinstance(data, Mapping):
            raise PlanValidationError([f"a plan must be a JSON object, not {_kind(data)}"])
        plan_goal = data.get("goal", goal)
        if not isinstance(plan_goal, str):
            problems.append(f"'goal' must be a string, not {_kind(plan_goal)}")
            plan_goal = str(plan_goal)
        plan_inputs = data.get("inputs")
        if plan_inputs is None:
            plan_inputs = {}
        if not isinstance(plan_inputs, Mapping):
            problems.append(f"'inputs' must be an object (name -> value), not {_kind(plan_inputs)}")
            plan_inputs = {}
        plan_inputs = {**plan_inputs, **(inputs or {})}
        raw_steps = data.get("steps")
        steps: list[Step] = []
        if not isinstance(raw_steps, list):
            problems.append(f"'steps' must be a list of steps, not {_kind(raw_steps)}")
            raw_steps = []
        for index, raw in enumerate(raw_steps, 1):
            step = _parse_step(raw, index, problems)
            if step is not None:
                steps.append(step)
        output: StepRef | None = None
        raw_output = data.get("output")
        if raw_output is not None:
            parsed = _parse_ref(raw_output) if isinstance(raw_output, Mapping | str) else None
            if isinstance(raw_output, str) and not isinstance(parsed, StepRef):
                parsed = StepRef(raw_output)
            if isinstance(parsed, StepRef):
                output = parsed
            else:
                problems.append(
                    f"'output' must be a step id or {{\"$step\": id, \"path\": ...}}, not {json.dumps(raw_output)[:80]}"
                )
        if problems:
            raise PlanValidationError(problems)
        return cls(plan_goal, dict(plan_inputs), steps, output)

    @classmethod
    def from_json(cls, text: str, **kwargs: Any) -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanValidationError([f"the plan is not valid JSON: {exc.msg} at line {exc.lineno}"]) from None
        return cls.from_dict(data, **kwargs)

    # -- display ---------------------------------------------------------------------------

    def __str__(self) -> str:
        lines = [f"Plan: {self.goal}"]
        if self.inputs:
            lines.append("Inputs:")
            lines.extend(f"  {name} = {_preview(value)}" for name, value in self.inputs.items())
        lines.append("Steps:")
        for number, step in enumerate(self.steps, 1):
            line = f"  {number}. {step}"
            if step.description:
                line += f"  # {step.description}"
            lines.append(line)
        out = self.output_ref
        lines.append(f"Output: {out if out is not None else '(none)'}")
        return "\n".join(lines)

    # -- checks and execution -----------------------------------------------------------------

    def problems(self, kernel: Kernel, *, allowed: Collection[str] | None = None,
                 max_steps: int | None = None, input_names: Collection[str] | None = None) -> list[str]:
        """Every problem of this plan against `kernel`'s functions (empty: valid)."""
        return find_problems(self, kernel, allowed=allowed, max_steps=max_steps, input_names=input_names)

    def validate(self, kernel: Kernel, **kwargs: Any) -> Plan:
        """Raise PlanValidationError listing every problem; return the plan when valid."""
        problems = self.problems(kernel, **kwargs)
        if problems:
            raise PlanValidationError(problems)
        return self

    async def run(self, kernel: Kernel, inputs: Mapping[str, Any] | None = None, **options: Any) -> PlanRun:
        """Validate, then execute as a graph; see `kernel.planner.execute_plan`."""
        from .planner import execute_plan

        return await execute_plan(kernel, self, inputs, **options)


# --- parsing helpers -------------------------------------------------------------------------


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _parse_step(raw: Any, index: int, problems: list[str]) -> Step | None:
    where = f"step #{index}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be an object with id, function and arguments, not {_kind(raw)}")
        return None
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not step_id:
        problems.append(f"{where}: 'id' must be a non-empty string, not {json.dumps(step_id)}")
        return None
    where = f"step {step_id!r}"
    function = raw.get("function")
    if not isinstance(function, str) or not function:
        problems.append(f"{where}: 'function' must be a 'plugin.function' name, not {json.dumps(function)}")
        return None
    raw_args = raw.get("arguments", {})
    if raw_args is None:
        raw_args = {}
    if not isinstance(raw_args, Mapping):
        problems.append(f"{where} ({function}): 'arguments' must be an object, not {_kind(raw_args)}")
        return None
    arguments: dict[str, Any] = {}
    for name, value in raw_args.items():
        try:
            arguments[str(name)] = _parse_arg(value)
        except ValueError as exc:
            problems.append(f"{where} ({function}): argument {name!r}: {exc}")
    description = raw.get("description") or ""
    return Step(step_id, function, arguments, str(description))


def _parse_ref(value: Mapping[str, Any] | str) -> Ref | None:
    if isinstance(value, str):
        match = _SHORTHAND.match(value)
        if match is None:
            return None
        ident, path = match.group("id"), match.group("path")
        if ident in ("input", "inputs"):
            return InputRef(path) if path and "." not in path else None
        return StepRef(ident, path)
    if INPUT_KEY in value:
        name = value[INPUT_KEY]
        if set(value) != {INPUT_KEY} or not isinstance(name, str) or not name:
            raise ValueError(f"an input reference is {{\"$input\": \"name\"}}, got {json.dumps(value)[:80]}")
        return InputRef(name)
    if STEP_KEY in value:
        step, path = value[STEP_KEY], value.get(PATH_KEY)
        if set(value) - {STEP_KEY, PATH_KEY} or not isinstance(step, str) or not step:
            raise ValueError(
                f"a step reference is {{\"$step\": \"id\", \"path\": \"field.sub\"}}, got {json.dumps(value)[:80]}"
            )
        if path is not None and (not isinstance(path, str) or not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", path)):
            raise ValueError(f"'path' must be dot-separated field names, got {json.dumps(path)}")
        return StepRef(step, path or None)
    return None


def _parse_arg(value: Any) -> Any:
    if isinstance(value, Mapping):
        if VALUE_KEY in value and len(value) == 1:
            return value[VALUE_KEY]
        ref = _parse_ref(value)
        return ref if ref is not None else dict(value)
    if isinstance(value, str):
        ref = _parse_ref(value)
        return ref if ref is not None else value
    return value


def _arg_to_json(value: Any) -> Any:
    if isinstance(value, InputRef | StepRef):
        return value.to_json()
    if isinstance(value, Mapping) and (INPUT_KEY in value or STEP_KEY in value or VALUE_KEY in value):
        return {VALUE_KEY: value}
    if isinstance(value, str) and _SHORTHAND.match(value):
        return {VALUE_KEY: value}
    return value


def _show(value: Any) -> str:
    if isinstance(value, InputRef | StepRef):
        return str(value)
    return _preview(value)


def _preview(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- validation --------------------------------------------------------------------------------


def return_schema_of(fn: KernelFunction) -> dict[str, Any]:
    """The JSON schema of what `fn` returns ({} when unknown). Prompt functions return
    their output schema's object, or text."""
    return fn.return_schema


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < 20:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node if isinstance(node, dict) else {}
        seen += 1
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0], root)
    return schema


def path_problem(schema: dict[str, Any], segments: list[str]) -> str | None:
    """Why `segments` cannot be read from a value of `schema`, or None when it can (or
    when the schema does not say enough to tell)."""
    root = schema
    node = _resolve(schema, root)
    walked: list[str] = []
    for segment in segments:
        if not node:
            return None
        kind = node.get("type")
        if "properties" in node or kind == "object":
            props = node.get("properties")
            if not isinstance(props, dict) or (not props and node.get("additionalProperties", True) is not False):
                return None  # a free-form object: cannot tell
            if segment not in props:
                at = f" at {'.'.join(walked)!r}" if walked else ""
                known = ", ".join(sorted(props)) or "none"
                return f"has no field {segment!r}{at} (fields: {known})"
            node = _resolve(props[segment], root)
        elif kind == "array":
            if not segment.isdigit():
                return f"is a list{' at ' + repr('.'.join(walked)) if walked else ''}; use an index, not {segment!r}"
            items = node.get("items")
            node = _resolve(items, root) if isinstance(items, dict) else {}
        elif kind in ("integer", "number", "boolean", "null"):
            at = f" at {'.'.join(walked)!r}" if walked else ""
            return f"is {kind}{at}, which has no field {segment!r}"
        else:
            return None  # text (parsed as JSON at run time), unions, unknown
        walked.append(segment)
    return None


_JSON_CHECKS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _json_type_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """A small JSON-schema type check, for functions without a pydantic arguments model."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if kinds and not any(_JSON_CHECKS.get(k, lambda v: True)(value) for k in kinds):
        return f"expected {' or '.join(kinds)}, got {_kind(value)} {_preview(value, 40)}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"expected one of {_preview(enum, 80)}, got {_preview(value, 40)}"
    return None


def _literal_problems(fn: KernelFunction, literals: dict[str, Any]) -> list[tuple[str, str]]:
    """(parameter, problem) for each ill-typed literal, checked by the function's own
    arguments model (so a literal that passes here passes at invocation)."""
    model = getattr(fn, "_arguments_model", None)
    if model is None:
        params = {p.name: p for p in fn.parameters}
        out = []
        for name, value in literals.items():
            if name in params:
                problem = _json_type_problem(value, params[name].schema)
                if problem:
                    out.append((name, problem))
        return out
    try:
        model.__pydantic_validator__.validate_python(literals)
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors(include_url=False):
            loc = err.get("loc") or ()
            if len(loc) <= 1 and err.get("type") in ("missing", "extra_forbidden"):
                continue  # reported (or excused, for references) by the caller
            param = str(loc[0]) if loc else "?"
            inner = ".".join(str(p) for p in loc[1:])
            msg = err.get("msg", "invalid value") + (f" (at {inner})" if inner else "")
            given = err.get("input")
            if not isinstance(given, dict | list) and given is not None:
                msg += f"; got {_preview(given, 40)}"
            found.append((param, msg))
        return found
    return []


def find_problems(plan: Plan, kernel: Kernel, *, allowed: Collection[str] | None = None,
                  max_steps: int | None = None, input_names: Collection[str] | None = None) -> list[str]:
    """Every problem of `plan`, each naming the step, the function and the argument.

    `allowed`: fully qualified names the plan may use (None: any registered function);
    `input_names`: the goal inputs references may use (default: the plan's inputs).
    """
    problems: list[str] = []
    inputs = set(plan.inputs if input_names is None else input_names)
    if not plan.steps:
        problems.append("the plan has no steps")
    if max_steps is not None and len(plan.steps) > max_steps:
        problems.append(f"the plan has {len(plan.steps)} steps; at most {max_steps} are allowed")
    position: dict[str, int] = {}
    for index, step in enumerate(plan.steps):
        if step.id in position:
            problems.append(f"duplicate step id {step.id!r} (steps #{position[step.id] + 1} and #{index + 1})")
        else:
            position[step.id] = index
    functions: dict[str, KernelFunction] = {}
    for index, step in enumerate(plan.steps):
        where = f"step {step.id!r} ({step.function})"
        try:
            fn = kernel.get_function(step.function)
        except FunctionNotFoundError as exc:
            problems.append(f"step {step.id!r}: unknown function {step.function!r}: {exc}")
            fn = None
        if fn is not None:
            if allowed is not None and fn.fully_qualified_name not in allowed:
                problems.append(f"{where}: function {fn.fully_qualified_name!r} is not allowed in this plan "
                                f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
            functions[step.id] = functions.get(step.id, fn)
            problems.extend(_argument_problems(step, fn, where))
        for name, ref in step.references():
            arg_where = f"{where}: argument {name!r}"
            if isinstance(ref, InputRef):
                if ref.name not in inputs:
                    known = ", ".join(sorted(inputs)) or "none"
                    problems.append(f"{arg_where} refers to the goal input {ref.name!r}, which does not exist "
                                    f"(inputs: {known})")
                continue
            target = position.get(ref.step)
            if ref.step == step.id:
                problems.append(f"{arg_where} refers to the step's own output ({ref})")
            elif target is None:
                problems.append(f"{arg_where} refers to step {ref.step!r}, which does not exist")
            elif target > index:
                problems.append(f"{arg_where} refers to step {ref.step!r}, which comes later in the plan")
    # field paths need every step's function: check them once all are known
    for step in plan.steps:
        for name, ref in step.references():
            if isinstance(ref, StepRef) and ref.path and ref.step in functions and ref.step != step.id:
                problem = path_problem(return_schema_of(functions[ref.step]), ref.segments)
                if problem:
                    problems.append(f"step {step.id!r} ({step.function}): argument {name!r}: the output of step "
                                    f"{ref.step!r} ({functions[ref.step].fully_qualified_name}) {problem}")
    problems.extend(_cycle_problems(plan))
    out = plan.output
    if out is not None:
        if out.step not in position:
            problems.append(f"the output refers to step {out.step!r}, which does not exist")
        elif out.path and out.step in functions:
            problem = path_problem(return_schema_of(functions[out.step]), out.segments)
            if problem:
                problems.append(f"the output {out}: the output of step {out.step!r} "
                                f"({functions[out.step].fully_qualified_name}) {problem}")
    return problems


def _argument_problems(step: Step, fn: KernelFunction, where: str) -> list[str]:
    problems: list[str] = []
    params = {p.name: p for p in fn.parameters}
    for name in step.arguments:
        if name not in params:
            known = ", ".join(params) or "none"
            problems.append(f"{where}: unexpected argument {name!r} (parameters: {known})")
    for p in fn.parameters:
        if p.required and p.name not in step.arguments:
            problems.append(f"{where}: missing required argument {p.name!r}")
    literals = {k: v for k, v in step.arguments.items()
                if k in params and not isinstance(v, InputRef | StepRef)}
    for param, problem in _literal_problems(fn, literals):
        problems.append(f"{where}: argument {param!r} has an ill-typed value: {problem}")
    return problems


def _cycle_problems(plan: Plan) -> list[str]:
    graph: dict[str, list[str]] = {}
    for step in plan.steps:
        graph.setdefault(step.id, [])
        graph[step.id].extend(sorted(dep for dep in step.dependencies() if dep != step.id))
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    cycles.append(cycle)
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return [f"steps form a cycle: {' -> '.join(reversed(c))}" for c in cycles]
