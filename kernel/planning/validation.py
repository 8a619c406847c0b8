"""Plan validation: every problem of a plan against the kernel's functions, found at
once (unknown or disallowed functions, missing, extra or mistyped arguments, references
to unknown inputs, later steps or missing fields of a structured result, cycles).

Nothing here recurses over the plan: the cycle check is an iterative depth-first search,
so a plan of any length (a chain of 100,000 steps each referring to the next) gives
problems, never a `RecursionError`; values nested more than `MAX_DEPTH` levels are a
problem, not type-checked."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import FunctionNotFoundError
from .model import DEPTH_PROBLEM, InputRef, Plan, Step, StepRef, input_depth_problems, kind_of, preview, too_deep

if TYPE_CHECKING:
    from ..functions import KernelFunction
    from ..kernel import Kernel


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
        return f"expected {' or '.join(kinds)}, got {kind_of(value)} {preview(value, 40)}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"expected one of {preview(enum, 80)}, got {preview(value, 40)}"
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
                msg += f"; got {preview(given, 40)}"
            found.append((param, msg))
        return found
    return []


def find_problems(plan: Plan, kernel: Kernel, *, allowed: Collection[str] | None = None,
                  max_steps: int | None = None, input_names: Collection[str] | None = None) -> list[str]:
    """Every problem of `plan`, each naming the step, the function and the argument.

    `allowed`: fully qualified names the plan may use (None: any registered function);
    `input_names`: the goal inputs references may use (default: the plan's inputs).
    """
    problems: list[str] = input_depth_problems(plan.inputs)
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
    deep = {name for name, value in step.arguments.items()
            if not isinstance(value, InputRef | StepRef) and too_deep(value)}
    problems.extend(f"{where}: argument {name!r}: {DEPTH_PROBLEM}" for name in sorted(deep))
    params = {p.name: p for p in fn.parameters}
    for name in step.arguments:
        if name not in params:
            known = ", ".join(params) or "none"
            problems.append(f"{where}: unexpected argument {name!r} (parameters: {known})")
    for p in fn.parameters:
        if p.required and p.name not in step.arguments:
            problems.append(f"{where}: missing required argument {p.name!r}")
    literals = {k: v for k, v in step.arguments.items()
                if k in params and k not in deep and not isinstance(v, InputRef | StepRef)}
    for param, problem in _literal_problems(fn, literals):
        problems.append(f"{where}: argument {param!r} has an ill-typed value: {problem}")
    return problems


MAX_CYCLES_SHOWN = 20
"""Cycles listed one by one; a plan with more says so in one more problem."""


def _cycle_problems(plan: Plan) -> list[str]:
    """The cycles of the step graph, found by an iterative depth-first search (steps in
    plan order, each step's dependencies sorted): one problem per distinct cycle, at most
    `MAX_CYCLES_SHOWN` of them."""
    graph: dict[str, list[str]] = {}
    for step in plan.steps:
        graph.setdefault(step.id, [])
        graph[step.id].extend(sorted(dep for dep in step.dependencies() if dep != step.id))
    done: set[str] = set()
    cycles: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()
    more = False
    for root in graph:
        if root in done:
            continue
        path = [root]  # the steps being visited, root first
        on_path = {root: 0}  # step -> its index in `path`
        pending = [iter(graph[root])]  # the dependencies left to visit, per step of `path`
        while pending:
            for dep in pending[-1]:
                if dep not in graph or dep in done:
                    continue
                index = on_path.get(dep)
                if index is None:
                    on_path[dep] = len(path)
                    path.append(dep)
                    pending.append(iter(graph[dep]))
                    break
                if len(cycles) >= MAX_CYCLES_SHOWN:
                    more = True
                    continue
                cycle = [*path[index:], dep]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    cycles.append(cycle)
            else:
                pending.pop()
                node = path.pop()
                del on_path[node]
                done.add(node)
    found = [f"steps form a cycle: {_show_cycle(c)}" for c in cycles]
    if more:
        found.append(f"steps form more cycles than the {MAX_CYCLES_SHOWN} listed")
    return found


def _show_cycle(cycle: list[str], keep: int = 6) -> str:
    steps = list(reversed(cycle))
    if len(steps) > 2 * keep + 1:
        steps = [*steps[:keep], f"... ({len(steps) - 2 * keep} more steps) ...", *steps[-keep:]]
    return " -> ".join(steps)
