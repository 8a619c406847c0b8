"""The plan data model: goal, inputs, steps, references, and their JSON form.

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

Literal values and input values nest at most `MAX_DEPTH` levels of lists and objects;
a deeper one is a problem (`PlanValidationError`), never a `RecursionError`.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PlanValidationError

if TYPE_CHECKING:
    from ..kernel import Kernel
    from .execution import PlanRun

INPUT_KEY = "$input"
STEP_KEY = "$step"
VALUE_KEY = "$value"
PATH_KEY = "path"
MAX_DEPTH = 64
"""The deepest nesting of lists and objects in a literal or input value of a plan."""

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
        args = ", ".join(f"{name}={show(value)}" for name, value in self.arguments.items())
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
            raise PlanValidationError([f"a plan must be a JSON object, not {kind_of(data)}"])
        plan_goal = data.get("goal", goal)
        if not isinstance(plan_goal, str):
            problems.append(f"'goal' must be a string, not {kind_of(plan_goal)}")
            plan_goal = ""
        plan_inputs = data.get("inputs")
        if plan_inputs is None:
            plan_inputs = {}
        if not isinstance(plan_inputs, Mapping):
            problems.append(f"'inputs' must be an object (name -> value), not {kind_of(plan_inputs)}")
            plan_inputs = {}
        plan_inputs = {**plan_inputs, **(inputs or {})}
        problems.extend(input_depth_problems(plan_inputs))
        raw_steps = data.get("steps")
        steps: list[Step] = []
        if not isinstance(raw_steps, list):
            problems.append(f"'steps' must be a list of steps, not {kind_of(raw_steps)}")
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
                    f"'output' must be a step id or {{\"$step\": id, \"path\": ...}}, not {preview(raw_output, 80)}"
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
        except RecursionError:  # json.loads recurses; this is far deeper than MAX_DEPTH
            raise PlanValidationError([f"the plan is nested too deeply (more than {MAX_DEPTH} levels)"]) from None
        return cls.from_dict(data, **kwargs)

    # -- display ---------------------------------------------------------------------------

    def __str__(self) -> str:
        lines = [f"Plan: {self.goal}"]
        if self.inputs:
            lines.append("Inputs:")
            lines.extend(f"  {name} = {preview(value)}" for name, value in self.inputs.items())
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
        from .validation import find_problems

        return find_problems(self, kernel, allowed=allowed, max_steps=max_steps, input_names=input_names)

    def validate(self, kernel: Kernel, **kwargs: Any) -> Plan:
        """Raise PlanValidationError listing every problem; return the plan when valid."""
        problems = self.problems(kernel, **kwargs)
        if problems:
            raise PlanValidationError(problems)
        return self

    async def run(self, kernel: Kernel, inputs: Mapping[str, Any] | None = None, **options: Any) -> PlanRun:
        """Validate, then execute as a graph; see `kernel.planning.execute_plan`."""
        from .execution import execute_plan

        return await execute_plan(kernel, self, inputs, **options)


# --- parsing helpers -------------------------------------------------------------------------


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _parse_step(raw: Any, index: int, problems: list[str]) -> Step | None:
    where = f"step #{index}"
    if not isinstance(raw, Mapping):
        problems.append(f"{where} must be an object with id, function and arguments, not {kind_of(raw)}")
        return None
    step_id = raw.get("id")
    if not isinstance(step_id, str) or not step_id:
        problems.append(f"{where}: 'id' must be a non-empty string, not {preview(step_id, 80)}")
        return None
    where = f"step {step_id!r}"
    function = raw.get("function")
    if not isinstance(function, str) or not function:
        problems.append(f"{where}: 'function' must be a 'plugin.function' name, not {preview(function, 80)}")
        return None
    raw_args = raw.get("arguments", {})
    if raw_args is None:
        raw_args = {}
    if not isinstance(raw_args, Mapping):
        problems.append(f"{where} ({function}): 'arguments' must be an object, not {kind_of(raw_args)}")
        return None
    arguments: dict[str, Any] = {}
    for name, value in raw_args.items():
        try:
            arguments[str(name)] = _parse_arg(value)
        except ValueError as exc:
            problems.append(f"{where} ({function}): argument {name!r}: {exc}")
            continue
        if too_deep(arguments[str(name)]):
            problems.append(f"{where} ({function}): argument {name!r}: {DEPTH_PROBLEM}")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        description = preview(description, 200)
    return Step(step_id, function, arguments, description)


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
            raise ValueError(f"an input reference is {{\"$input\": \"name\"}}, got {preview(value, 80)}")
        return InputRef(name)
    if STEP_KEY in value:
        step, path = value[STEP_KEY], value.get(PATH_KEY)
        if set(value) - {STEP_KEY, PATH_KEY} or not isinstance(step, str) or not step:
            raise ValueError(
                f"a step reference is {{\"$step\": \"id\", \"path\": \"field.sub\"}}, got {preview(value, 80)}"
            )
        if path is not None and (not isinstance(path, str) or not re.fullmatch(r"[^.\s]+(\.[^.\s]+)*", path)):
            raise ValueError(f"'path' must be dot-separated field names, got {preview(path, 80)}")
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


def show(value: Any) -> str:
    if isinstance(value, InputRef | StepRef):
        return str(value)
    return preview(value)


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxstring, _SHOW.maxother = 4, 120, 120


def preview(value: Any, limit: int = 60) -> str:
    """A short JSON-like text of `value` (any value: too deep or not JSON, a bounded repr)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = _SHOW.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


DEPTH_PROBLEM = f"the value is nested too deeply (more than {MAX_DEPTH} levels of lists and objects)"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether `value` nests lists/tuples and mappings more than `limit` levels (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    # container id -> the greatest depth it was walked at: shared data is walked again only
    # deeper (at most `limit` times), cyclic data is as deep as the limit
    seen: dict[int, int] = {}
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        if seen.get(id(item), -1) >= depth:
            continue
        seen[id(item)] = depth
        stack.extend((child, depth + 1) for child in children)
    return False


def input_depth_problems(inputs: Mapping[str, Any]) -> list[str]:
    return [f"input {name!r}: {DEPTH_PROBLEM}" for name, value in inputs.items() if too_deep(value)]
