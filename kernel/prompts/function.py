"""Prompt functions: a Jinja template plus settings, rendered and sent to a chat model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, create_model

from ..contents import ChatMessage, KernelStreamEvent
from ..errors import InvocationError
from ..functions import KernelFunction, ParameterInfo, check_name
from .structured_output import MAX_REPAIRS, check_output, repair_message
from .templates import SK_CALL, TEMPLATES, CompiledTemplate, SKFunctionCall, TemplateHelpers

if TYPE_CHECKING:
    from ..kernel import Kernel

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "array": list,
    "object": dict,
}

_MISSING: Any = object()


@dataclass(slots=True)
class InputVariable:
    """One input of a prompt function.

    `trusted=True` inserts the value into the template without escaping, so it may
    contain `<message>` markup: only for text the application itself controls.
    """

    name: str
    description: str = ""
    default: Any = _MISSING
    required: bool | None = None
    type: str | None = None
    trusted: bool = False
    schema: dict[str, Any] = field(default_factory=dict)

    @property
    def is_required(self) -> bool:
        if self.required is not None:
            return self.required and self.default is _MISSING
        return self.default is _MISSING


class PromptFunction(KernelFunction):
    """A function whose body is a prompt template.

    `execution_settings` maps a service name (or ``"default"``) to settings such as
    `max_tokens` and `temperature`; `service` picks the chat service (else the kernel's
    default); `output_schema` asks for structured JSON output, parsed into the result
    and checked against the schema (a mismatch gets one repair turn, then fails);
    `check_output=False` only parses it, for a function that checks its output itself;
    `helpers` adds a template format's globals (Semantic Kernel's helpers), names that are
    then not inputs; with its `passes_variables`, a template that calls functions takes
    variables it does not declare too, and passes them to those functions (as SK does).
    """

    streams = True

    def __init__(
        self,
        template: str,
        *,
        name: str,
        plugin_name: str = "prompts",
        description: str = "",
        input_variables: Sequence[InputVariable] | None = None,
        execution_settings: Mapping[str, Mapping[str, Any]] | None = None,
        output_schema: dict[str, Any] | None = None,
        service: str | None = None,
        source: str | None = None,
        needs_approval: bool = False,
        check_output: bool = True,
        helpers: TemplateHelpers | None = None,
        compiled: CompiledTemplate | None = None,
    ) -> None:
        self.name = check_name("function", name)
        self.plugin_name = check_name("plugin", plugin_name)
        self.description = description
        self.template_source = template
        self.source = source or f"{plugin_name}.{name}"
        # `compiled`: the template already parsed (the plugin folders' parse cache restores it)
        self.template: CompiledTemplate = compiled if compiled is not None else TEMPLATES.get(template, self.source)
        self.execution_settings = {k: dict(v) for k, v in (execution_settings or {}).items()}
        self.output_schema = output_schema
        self.check_output = check_output
        self.service = service
        self.needs_approval = needs_approval
        declared = {v.name: v for v in input_variables or ()}
        self._helpers = helpers
        self._helper_names = helpers.names(self.template) - set(declared) if helpers is not None else frozenset()
        for var in sorted(self.template.variables - set(declared) - self._helper_names):
            declared[var] = InputVariable(var)  # discovered in the template: a required string
        self.inputs: dict[str, InputVariable] = declared
        self._trusted = frozenset(v.name for v in declared.values() if v.trusted)
        # `{{ name.upper() }}`: `name` may be a variable or a plugin; accept it unvalidated.
        self._passthrough = self.template.call_targets - set(declared)
        self._passes_variables = bool(getattr(helpers, "passes_variables", False)) and bool(
            self.template.uses_sk_call or self.template.called_names)
        self._model: type[BaseModel] | None = None
        self._build_parameters()

    @classmethod
    def from_template(
        cls,
        template: str,
        *,
        name: str,
        plugin: str = "prompts",
        description: str = "",
        inputs: Sequence[InputVariable | str] | Mapping[str, Any] | None = None,
        settings: Mapping[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        service: str | None = None,
        trusted: Sequence[str] = (),
    ) -> PromptFunction:
        """Convenience constructor: `inputs` may be names, InputVariables, or a mapping
        of name to default value; `settings` are the default execution settings."""
        variables: list[InputVariable] = []
        if isinstance(inputs, Mapping):
            variables = [InputVariable(k, default=v, trusted=k in trusted) for k, v in inputs.items()]
        else:
            for item in inputs or ():
                var = InputVariable(item) if isinstance(item, str) else item
                if var.name in trusted:
                    var.trusted = True
                variables.append(var)
        for name_ in trusted:
            if not any(v.name == name_ for v in variables):
                variables.append(InputVariable(name_, trusted=True))
        return cls(
            template,
            name=name,
            plugin_name=plugin,
            description=description,
            input_variables=variables,
            execution_settings={"default": dict(settings)} if settings else None,
            output_schema=output_schema,
            service=service,
        )

    def _build_parameters(self) -> None:
        params: list[ParameterInfo] = []
        for var in self.inputs.values():
            schema = dict(var.schema) or {"type": var.type or "string"}
            default = None if var.default is _MISSING else var.default
            params.append(ParameterInfo(var.name, var.description, schema, var.is_required, default))
        self._parameters = params

    @property
    def _arguments_model(self) -> type[BaseModel] | None:  # type: ignore[override]
        """Built on first validation: pydantic's create_model costs far more than loading."""
        if self._model is None and self.inputs:
            fields: dict[str, Any] = {}
            for var in self.inputs.values():
                typed = var.type or var.schema
                py_type: Any = _JSON_TYPES.get((var.schema or {}).get("type", var.type or ""), Any) if typed else Any
                default = None if var.default is _MISSING else var.default
                fields[var.name] = (py_type, ... if var.is_required else default)
            self._model = create_model(  # type: ignore[call-overload,unused-ignore]
                f"{self.plugin_name}_{self.name}_arguments",
                __config__=ConfigDict(extra="forbid"),
                **fields,
            )
        return self._model

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        unchecked = self._passthrough
        if self._passes_variables:  # SK: a variable nobody declared is kept for the functions called
            unchecked = unchecked | (arguments.keys() - self.inputs.keys())
        if not unchecked or not any(name in arguments for name in unchecked):
            return super().validate(arguments)
        rest = {k: v for k, v in arguments.items() if k not in unchecked}
        validated = super().validate(rest)
        validated.update({k: v for k, v in arguments.items() if k in unchecked})
        return validated

    @property
    def return_schema(self) -> dict[str, Any]:
        """The output schema's shape when structured output is asked for, else text."""
        return self.output_schema if self.output_schema is not None else {"type": "string"}

    def settings_for(self, service_name: str) -> dict[str, Any]:
        """Execution settings for a service: its own entry, else `default`."""
        specific = self.execution_settings.get(service_name)
        if specific is not None:
            return dict(specific)
        return dict(self.execution_settings.get("default", {}))

    async def render(self, kernel: Kernel, arguments: Mapping[str, Any]) -> str:
        """The rendered prompt text (escaped values, before chat parsing)."""
        from .markup import prepare_variables  # with the template engine, not with the function

        variables = prepare_variables(arguments, self._trusted)
        functions: Mapping[str, Any] = kernel.template_functions()
        if self.template.uses_sk_call or self._helpers is not None:
            call = SKFunctionCall(kernel, self._given(arguments), self.source)
            functions = {**functions, SK_CALL: call}
            if self._helpers is not None:
                functions.update(self._helpers.bind(arguments, self._helper_names, call))
        return await self.template.render(variables, functions)

    def _given(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The variables SK would pass to the functions a template calls: an input left to an
        empty default (None, "", 0, false) is not one (SK adds only the other defaults)."""
        def left_to_empty_default(name: str, value: Any) -> bool:
            var = self.inputs.get(name)
            default = _MISSING if var is None else var.default
            empty = default is None or (isinstance(default, str | int | float) and not default)
            return empty and value == default and type(value) is type(default)

        return {name: value for name, value in arguments.items() if not left_to_empty_default(name, value)}

    async def render_messages(self, kernel: Kernel, arguments: Mapping[str, Any]) -> list[ChatMessage]:
        """The chat messages this function sends for `arguments` (prompt filters applied)."""
        from .execution import render_messages

        return await render_messages(kernel, self, arguments)

    async def run(self, kernel: Kernel, arguments: dict[str, Any]) -> Any:
        from .execution import complete, render_messages

        messages = await render_messages(kernel, self, arguments)
        overrides = getattr(arguments, "settings", None)
        response = await complete(kernel, self, messages, overrides)
        schema = self.output_schema
        if schema is None:
            return response.message.content
        value, problems = check_output(response.message.content, schema if self.check_output else None)
        for _ in range(MAX_REPAIRS):
            if not problems:
                break
            messages = [*messages, ChatMessage.assistant(response.message.content), repair_message(problems)]
            response = await complete(kernel, self, messages, overrides)
            value, problems = check_output(response.message.content, schema)
        if problems:
            raise InvocationError(
                f"{self.fully_qualified_name}: the model's output does not match the output schema "
                f"(after {MAX_REPAIRS} repair turn(s)): {'; '.join(problems)}"
            )
        return value

    def stream(
        self, kernel: Kernel, arguments: dict[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> AsyncIterator[KernelStreamEvent]:
        from .execution import stream

        return stream(kernel, self, arguments, overrides)
