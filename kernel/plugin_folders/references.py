"""What the functions of a plugin folder refer to, checked once the folder is loaded: the
functions their templates call, the variables a `.prompt` file uses against the `inputs:`
it declares, and execution settings against the configured chat providers. Every problem
names the file and line, with a "did you mean" when a known name is close.

    {{ time.Now() }}    (SK: {{time.Now}})   with a plugin `time` that has no `Now`: an
        error, "calls time.Now, which does not exist ... (did you mean 'time.now'?)"
    {{ tme.now() }}     with no plugin `tme` known: a warning when every plugin is known
        (`kernel plugins check`: the folder and the standard plugins), else nothing (a
        kernel may register `tme` later)
    {{ name.upper() }}  `name` may be a variable: a method of a text, number, list or
        mapping is never reported
    {{date}}            (SK, a function name without its plugin) in no plugin known: as
        for an unknown plugin; in two plugins: an error (the call is ambiguous)

What is known comes from a kernel (`Known.of`): its plugins and functions and, for
`plugins check`, the setting names each configured chat service takes.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import Problem
from .reader import json_key_line, key_line, quiet_text

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..prompts import PromptFunction
    from ..services import ModelProfile
    from ..settings import ServiceSettings

Severity = Literal["error", "warning"]

__all__ = ["Known", "call_sites", "check_calls", "check_function", "check_settings", "service_settings",
           "static_profile", "suggestion", "variable_lines"]

TOOL_SETTING_KEYS = frozenset({"function_choice", "tools", "plugins", "functions", "tool_choice", "loop_policy"})
"""The settings that drive the kernel's tool loop (`kernel.prompts.execution.TOOL_SETTING_KEYS`,
not exported by `kernel.prompts`; a test keeps the two equal)."""

VALUE_METHODS = frozenset(
    name for kind in (str, int, float, list, tuple, dict, set) for name in dir(kind) if not name.startswith("_")
)
"""`x.name()` with one of these may be a method of a variable `x`: never reported."""


@dataclass(frozen=True)
class Known:
    """What a folder's functions are checked against.

    `functions`: function names by plugin (a kernel's plugins; the folder's own are added
    when it is checked). `complete`: every plugin there will be is known, so a call to
    an unknown plugin is reported (as a warning). `settings`: the setting names each
    configured chat service takes, by service name; None: settings are not checked."""

    functions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    complete: bool = False
    settings: Mapping[str, tuple[str, frozenset[str]]] | None = None
    """service name -> (provider, setting names it takes)."""
    scope: str = "this folder or the kernel's plugins"
    """What is known, for messages."""

    @classmethod
    def of(cls, kernel: Kernel, *, complete: bool = False, settings: bool = False,
           scope: str = "this folder or the kernel's plugins") -> Known:
        functions = {name: frozenset(plugin.functions) for name, plugin in kernel.plugins.items()}
        return cls(functions, complete, service_settings(kernel) if settings else None, scope)

    def with_functions(self, names: Iterable[str]) -> Known:
        """The same, knowing also the `plugin.function` names given."""
        merged = {name: set(functions) for name, functions in self.functions.items()}
        for full in names:
            plugin, _, function = full.partition(".")
            if function:
                merged.setdefault(plugin, set()).add(function)
        return Known({k: frozenset(v) for k, v in merged.items()}, self.complete, self.settings, self.scope)


def suggestion(name: str, candidates: Collection[str]) -> str:
    """`" (did you mean 'x'?)"` for the candidate closest to `name` (the same name in
    another case first), or ""."""
    by_case = {c.lower(): c for c in candidates}
    match = by_case.get(name.lower())
    if match is None:
        import difflib  # only for this message

        close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
        match = close[0] if close else None
    return f" (did you mean {match!r}?)" if match is not None and match != name else ""


# -- templates ------------------------------------------------------------------------


def _template_nodes(source: str) -> Any:
    from jinja2 import nodes

    from ..prompts import ENVIRONMENT

    try:
        ast = ENVIRONMENT.parse(source)
    except Exception:  # compiled before: cannot fail; a line is only a help
        return nodes, []
    return nodes, list(ast.find_all((nodes.Call, nodes.Name)))


SK_CALL = "sk_call"
"""The template global SK's formats may be translated to: `sk_call("plugin.function", ...)`,
`sk_call("plugin-function")` or `sk_call("function")` (looked up across plugins)."""


def call_sites(source: str) -> dict[str, tuple[int, bool]]:
    """Each function a Jinja template calls, by `plugin.function` (or a bare SK function
    name): the line of its first call, and whether it is only ever called as
    `base.attr(...)` (then `base` may be a variable)."""
    nodes, found = _template_nodes(source)
    sites: dict[str, tuple[int, bool]] = {}

    def add(name: str, line: int, attribute: bool) -> None:
        first, only_attribute = sites.get(name, (line, True))
        sites[name] = (min(first, line), only_attribute and attribute)

    for node in found:
        if not isinstance(node, nodes.Call):
            continue
        target = node.node
        if isinstance(target, nodes.Getattr) and isinstance(target.node, nodes.Name):
            add(f"{target.node.name}.{target.attr}", node.lineno, True)
        elif (isinstance(target, nodes.Name) and target.name == SK_CALL and node.args
              and isinstance(node.args[0], nodes.Const) and isinstance(node.args[0].value, str)):
            add(node.args[0].value.replace("-", ".", 1), node.lineno, False)
    return sites


def variable_lines(source: str, names: Collection[str]) -> dict[str, int]:
    """The line where each of `names` is first read in a Jinja template."""
    nodes, found = _template_nodes(source)
    lines: dict[str, int] = {}
    for node in found:
        if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names:
            lines[node.name] = min(lines.get(node.name, node.lineno), node.lineno)
    return lines


def check_calls(fn: PromptFunction, known: Known, path: Path, offset: int) -> list[Problem]:
    """The functions `fn`'s template calls that do not exist (see the module docstring)."""
    template = fn.template
    bare: frozenset[str] = getattr(template, "sk_names", frozenset())  # SK's `{{date}}`: across plugins
    suspects = [call for call in template.functions_used if _missing(call, known)]
    suspects += [name for name in bare if _owners(name, known) != 1 and (known.complete or _owners(name, known))]
    if not suspects:
        return []
    sites = call_sites(fn.template_source)
    found: list[tuple[int | None, int, str, Severity]] = []  # (line, position, message, severity)
    for call in suspects:
        line, attribute = sites.get(call, (None, True))
        base, _, attr = call.partition(".")
        if attribute and (base in fn.inputs or base in template.variables or attr in VALUE_METHODS):
            continue  # `base` is a variable (or may be one: `name.upper()`)
        message, severity = _call_problem(call, known)
        found.append((line, fn.template_source.find(call), message, severity))
    found.sort(key=lambda item: (item[0] or 0, item[1]))
    return [Problem(str(path), message, None if line is None else line + offset, severity)
            for line, _, message, severity in found]


def _call_problem(call: str, known: Known) -> tuple[str, Severity]:
    base, _, attr = call.partition(".")
    every = sorted(f"{plugin}.{name}" for plugin, names in known.functions.items() for name in names)
    if not attr:  # a bare SK name
        owners = [name for name in every if name.split(".", 1)[1] == call]
        if owners:
            return f"calls {call}, which is ambiguous: {', '.join(owners)} (write one of them)", "error"
        hint = suggestion(call, sorted({name.split(".", 1)[1] for name in every}))
        return f"calls {call}: no plugin in {known.scope} has a function {call!r}{hint}", "warning"
    functions = known.functions.get(base)
    if functions is None:
        hint = suggestion(call, every) or suggestion(base, list(known.functions))
        return f"calls {call}: no plugin {base!r} in {known.scope}{hint}", "warning"
    hint = suggestion(call, [f"{base}.{name}" for name in functions]) or suggestion(call, every)
    return f"calls {call}, which does not exist: plugin {base!r} has no function {attr!r}{hint}", "error"


def _missing(call: str, known: Known) -> bool:
    base, _, attr = call.partition(".")
    functions = known.functions.get(base)
    return attr not in functions if functions is not None else known.complete


def _owners(name: str, known: Known) -> int:
    return sum(name in names for names in known.functions.values())


# -- execution settings ---------------------------------------------------------------


def service_settings(kernel: Kernel) -> dict[str, tuple[str, frozenset[str]]] | None:
    """The setting names each configured chat service takes (its provider's profile, the
    neutral settings, `extra_body` where the provider merges one, the tool-loop options);
    None when a provider's profile cannot be known without building the service."""
    from ..services import NEUTRAL_SETTINGS

    registry = kernel.services
    services = {name: svc for name, svc in kernel.settings.services.items() if registry.kind_of(svc) == "chat"}
    if not services:
        default = registry.default_name("chat")
        try:
            services = {default: registry.service_settings(default, "chat")}
        except Exception:
            return None
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for name, svc in services.items():
        profile = static_profile(kernel, name, svc)
        if profile is None:
            return None
        keys = set(profile.settings) | NEUTRAL_SETTINGS | TOOL_SETTING_KEYS
        if profile.extra_body:
            keys.add("extra_body")
        out[name] = (svc.provider, frozenset(keys))
    return out


def static_profile(kernel: Kernel, name: str, svc: ServiceSettings) -> ModelProfile | None:
    """The profile of a configured chat service's provider, without building the service
    (no SDK import, no key): the connector module's `PROFILE`, else its `Provider`
    class's `profile()` on a bare instance; None when neither answers."""
    from ..services import ModelProfile, Provider

    connector = kernel.services.connectors.get(("chat", svc.provider))
    if connector is None:
        return None
    module_name = getattr(connector.factory, "__module__", "")
    profile = getattr(sys.modules.get(module_name), "PROFILE", None)
    if isinstance(profile, ModelProfile):
        return profile
    classes: list[type[Provider]] = []
    pending = list(Provider.__subclasses__())
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    for cls in classes:
        if cls.__module__ == module_name and getattr(cls, "name", None) == svc.provider:
            try:
                provider = cls.__new__(cls)
                Provider.__init__(provider, name, svc)  # the settings only: no client, no key
                profile = cls.profile(provider, svc.model or "")
            except Exception:
                return None
            return profile if isinstance(profile, ModelProfile) else None
    return None


def settings_file(fn: PromptFunction, path: Path) -> Path:
    """Where `fn`'s execution settings are written: `config.json` beside an SK
    `skprompt.txt`, else the function's own file."""
    return path.parent / "config.json" if path.name == "skprompt.txt" else path


def check_settings(fn: PromptFunction, services: Mapping[str, tuple[str, frozenset[str]]],
                   path: Path) -> list[Problem]:
    """Execution settings of `fn` that no configured chat service it may run on takes."""
    where = settings_file(fn, path)
    out: list[Problem] = []
    text: str | None = None
    for entry, values in fn.execution_settings.items():
        names: list[str]
        if entry == "default":
            names = [fn.service] if fn.service is not None and fn.service in services else list(services)
        elif entry in services:
            names = [entry]
        else:
            continue  # settings for a service not configured here: never used
        taken = frozenset().union(*(services[n][1] for n in names))
        for key in values:
            if key in taken:
                continue
            if text is None:
                text = quiet_text(where) or ""
            line = json_key_line(text, key) if where.suffix == ".json" else key_line(text, key)
            services_text = ", ".join(f"{n!r} (provider {services[n][0]})" for n in sorted(names))
            hint = suggestion(key, taken)
            more = "; server-specific parameters go in extra_body" if "extra_body" in taken and not hint else ""
            out.append(Problem(str(where), f"execution setting {key!r} is taken by no configured chat service "
                                           f"({services_text}): a call would fail{hint}{more}", line, "warning"))
    return out


def check_function(fn: PromptFunction, known: Known, path: Path, offset: int) -> list[Problem]:
    """Every problem `fn` has with what it refers to."""
    problems = check_calls(fn, known, path, offset)
    if known.settings is not None and fn.execution_settings:
        problems += check_settings(fn, known.settings, path)
    return problems
