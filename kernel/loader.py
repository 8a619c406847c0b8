"""Plugin folders: our `.prompt` files, Semantic Kernel's folders and YAML prompts, and
native Python modules, loaded with one call and every problem reported at once.

Layout rule
  `load_plugins(root)` treats `root` as ONE plugin (named after the folder) when it
  directly holds a function file (`*.prompt`, `*.yaml`/`*.yml`, a `*.py` module not
  starting with `_`) or an SK function folder (a subfolder with `skprompt.txt` or
  `config.json`). Otherwise every subfolder of `root` is a plugin. Names starting with `.`
  or `_` (`__pycache__`, `_shared/`) are skipped; other files (README.md, schema files)
  are ignored.

Inside a plugin folder
  * `NAME.prompt`: our format. Optional YAML front matter between `---` lines, then a
    Jinja body (see `parse_prompt_file`).
  * `NAME/skprompt.txt` (+ optional `NAME/config.json`): Semantic Kernel's folder format,
    unchanged. `template_format` "semantic-kernel" (default; translated by
    `kernel.sk_template`) or "jinja2"; "handlebars" is rejected.
  * `NAME.yaml` / `NAME.yml`: Semantic Kernel's single-file YAML prompt.
  * `*.py`: a module, imported from its file under a unique module name; its module-level
    `@kernel_function` functions join the plugin. Importing runs the module's code: a
    plugin folder is code, load only folders you trust.

Safety: only `yaml` safe loading (Python tags are rejected), files over 1 MiB and files
that are not UTF-8 are rejected, symbolic links that lead outside the root and paths
with `..` or absolute paths in file references are rejected, never followed.
Problems name the file and line; they are collected over the whole root and raised
together as one `PluginLoadError`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import KernelError, PluginError, PluginLoadError, Problem
from .functions import NAME_PATTERN, KernelFunction, KernelPlugin
from .prompt_function import InputVariable, PromptFunction
from .sk_template import SKTemplateError, translate

__all__ = ["MAX_FILE_BYTES", "PROMPT_SUFFIX", "load_plugins", "parse_front_matter"]

MAX_FILE_BYTES = 1 << 20
PROMPT_SUFFIX = ".prompt"
YAML_SUFFIXES = (".yaml", ".yml")
SK_PROMPT_FILE = "skprompt.txt"
SK_CONFIG_FILE = "config.json"
JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object"})

PROMPT_KEYS = frozenset(
    {"description", "inputs", "settings", "execution_settings", "output_schema", "service",
     "needs_approval", "template_format"}
)
INPUT_KEYS = frozenset({"description", "default", "type", "required", "trusted", "schema"})
SK_CONFIG_KEYS = frozenset(
    {"schema", "type", "name", "description", "template_format", "template", "input_variables",
     "output_variable", "execution_settings", "allow_dangerously_set_content",
     # version 1 of the format
     "completion", "input", "default_services"}
)
SK_YAML_KEYS = frozenset(
    {"name", "description", "template_format", "template", "input_variables", "output_variable",
     "execution_settings", "allow_dangerously_set_content"}
)
SK_INPUT_KEYS = frozenset(
    {"name", "description", "default", "is_required", "json_schema", "allow_dangerously_set_content", "type"}
)
_TEMPLATE_LINE = re.compile(r":(\d+): ")

_yaml_loader: Any = None


def _yaml() -> Any:
    """The safe YAML loader class (C implementation when available), imported once."""
    global _yaml_loader
    if _yaml_loader is None:
        import yaml

        _yaml_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _yaml_loader


class _Skip(Exception):
    """A problem was recorded; stop processing this file."""


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_real = Path(os.path.realpath(root))
        self.problems: list[Problem] = []

    # -- problems and files ----------------------------------------------------------

    def problem(self, path: Path | str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(str(path), message, line))

    def entries(self, folder: Path) -> list[tuple[str, Path, bool]]:
        """(name, path, is_dir) of a folder's visible entries; links out of the root are
        reported and left out."""
        out: list[tuple[str, Path, bool]] = []
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.problem(folder, f"cannot list folder: {exc.strerror or exc}")
            return out
        for entry in items:
            if entry.name.startswith("."):
                continue
            path = folder / entry.name
            if entry.is_symlink():
                target = Path(os.path.realpath(path))
                if not target.is_relative_to(self.root_real):
                    self.problem(path, "symbolic link leads outside the plugin root; not followed")
                    continue
                if not target.exists():
                    self.problem(path, "broken symbolic link")
                    continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            out.append((entry.name, path, is_dir))
        return out

    def read(self, path: Path) -> str:
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
                if len(data) > MAX_FILE_BYTES:
                    size = os.fstat(handle.fileno()).st_size
                    self.problem(path, f"file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
                    raise _Skip
        except OSError as exc:
            self.problem(path, f"cannot read file: {exc.strerror or exc}")
            raise _Skip from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.problem(path, f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x})", line)
            raise _Skip from None
        return text[1:] if text.startswith("\ufeff") else text

    def reference(self, base: Path, value: str, what: str, source: Path) -> Path:
        """A file named inside a plugin file: relative, without `..`, inside the root."""
        if "\0" in value:
            self.problem(source, f"{what} {value!r}: a path cannot contain a NUL byte")
            raise _Skip
        pure = PurePosixPath(value.replace("\\", "/"))
        if pure.is_absolute() or Path(value).is_absolute() or re.match(r"^[A-Za-z]:", value):
            self.problem(source, f"{what} {value!r}: absolute paths are not allowed (use a path relative to the file)")
            raise _Skip
        if ".." in pure.parts:
            self.problem(source, f"{what} {value!r}: '..' is not allowed; the file must be inside the plugin folder")
            raise _Skip
        path = base.joinpath(*pure.parts)
        if not Path(os.path.realpath(path)).is_relative_to(self.root_real):
            self.problem(source, f"{what} {value!r} leads outside the plugin root (symbolic link); not followed")
            raise _Skip
        if not path.is_file():
            self.problem(source, f"{what} {value!r}: no such file")
            raise _Skip
        return path

    # -- folders ---------------------------------------------------------------------

    def load(self) -> list[KernelPlugin]:
        root = self.root
        if not root.is_dir():
            self.problem(root, "no such plugin folder" if not root.exists() else "not a folder")
            return []
        entries = self.entries(root)
        if self.is_plugin_folder(entries):
            name = root.name or self.root_real.name
            plugin = self.plugin(name, root, entries)
            return [plugin] if plugin is not None else []
        plugins: list[KernelPlugin] = []
        for name, path, is_dir in entries:
            if not is_dir or name.startswith("_"):
                continue
            plugin = self.plugin(name, path, self.entries(path))
            if plugin is not None:
                plugins.append(plugin)
        return plugins

    @staticmethod
    def is_plugin_folder(entries: list[tuple[str, Path, bool]]) -> bool:
        for name, path, is_dir in entries:
            if name.startswith("_"):
                continue
            if is_dir:
                if (path / SK_PROMPT_FILE).exists() or (path / SK_CONFIG_FILE).exists():
                    return True
            elif name.endswith((PROMPT_SUFFIX, ".py", *YAML_SUFFIXES)) or name == SK_PROMPT_FILE:
                return True
        return False

    def plugin(self, name: str, folder: Path, entries: list[tuple[str, Path, bool]]) -> KernelPlugin | None:
        if not NAME_PATTERN.match(name):
            self.problem(folder, f"invalid plugin name {name!r}: use letters, digits and underscores, "
                                 "not starting with a digit")
            return None
        functions: dict[str, tuple[KernelFunction, Path]] = {}
        description = ""
        for entry_name, path, is_dir in entries:
            if entry_name.startswith("_"):
                continue
            try:
                if is_dir:
                    self.add(functions, self.sk_folder(name, entry_name, path), path)
                elif entry_name.endswith(PROMPT_SUFFIX):
                    self.add(functions, self.prompt_file(name, path), path)
                elif entry_name.endswith(YAML_SUFFIXES):
                    self.add(functions, self.sk_yaml(name, path), path)
                elif entry_name.endswith(".py"):
                    module_plugin = self.module(name, path)
                    description = description or module_plugin.description
                    for fn in module_plugin:
                        self.add(functions, fn, path)
                elif entry_name in (SK_PROMPT_FILE, SK_CONFIG_FILE):
                    self.problem(path, f"{entry_name} belongs in a function folder: "
                                       f"{name}/FUNCTION/{entry_name}")
            except _Skip:
                continue
        plugin = KernelPlugin(name, description=description, source=str(folder))
        for fn, _ in functions.values():
            plugin.add(fn)
        return plugin

    def add(self, functions: dict[str, tuple[KernelFunction, Path]], fn: KernelFunction, path: Path) -> None:
        previous = functions.get(fn.name)
        if previous is not None:
            self.problem(path, f"duplicate function name {fn.fully_qualified_name!r}: also defined by {previous[1]}")
            return
        functions[fn.name] = (fn, path)

    def function_name(self, name: str, path: Path) -> str:
        if not NAME_PATTERN.match(name):
            self.problem(path, f"invalid function name {name!r}: use letters, digits and underscores, "
                               "not starting with a digit")
            raise _Skip
        return name

    # -- our format ------------------------------------------------------------------

    def prompt_file(self, plugin: str, path: Path) -> PromptFunction:
        name = self.function_name(path.name[: -len(PROMPT_SUFFIX)], path)
        text = self.read(path)
        meta, body, offset = self.front_matter(text, path)
        for key in meta:
            if key not in PROMPT_KEYS:
                self.problem(path, f"unknown front matter key {key!r} "
                                   f"(expected one of: {', '.join(sorted(PROMPT_KEYS))})", _key_line(text, key))
        inputs = self.our_inputs(meta.get("inputs"), path, text)
        settings: dict[str, dict[str, Any]] = {}
        raw_settings = meta.get("execution_settings")
        if raw_settings is not None:
            if not _is_mapping_of_mappings(raw_settings):
                self.problem(path, "execution_settings must map a service name (or 'default') to settings",
                             _key_line(text, "execution_settings"))
            else:
                settings = {str(k): dict(v) for k, v in raw_settings.items()}
        default_settings = meta.get("settings")
        if default_settings is not None:
            if not isinstance(default_settings, Mapping):
                self.problem(path, "settings must be a mapping (max_tokens: 200, ...)", _key_line(text, "settings"))
            else:
                settings["default"] = {**settings.get("default", {}), **default_settings}
        output_schema = meta.get("output_schema")
        if isinstance(output_schema, str):
            output_schema = self.json_file(path.parent, output_schema, "output_schema", path)
        elif output_schema is not None and not isinstance(output_schema, dict):
            self.problem(path, "output_schema must be a JSON schema (a mapping) or a .json file name",
                         _key_line(text, "output_schema"))
            output_schema = None
        service = meta.get("service")
        if service is not None and not isinstance(service, str):
            self.problem(path, "service must be a service name", _key_line(text, "service"))
            service = None
        needs_approval = meta.get("needs_approval", False)
        if not isinstance(needs_approval, bool):
            self.problem(path, "needs_approval must be true or false", _key_line(text, "needs_approval"))
            needs_approval = False
        description = meta.get("description", "")
        if not isinstance(description, str):
            self.problem(path, "description must be text", _key_line(text, "description"))
            description = ""
        template_format = meta.get("template_format", "jinja")
        if template_format in ("semantic-kernel", "semantic_kernel"):
            body = self.sk_translate(body, path, offset)
        elif template_format not in ("jinja", "jinja2"):
            self.problem(path, f"template_format {template_format!r} is not supported "
                               "(use 'jinja' or 'semantic-kernel')", _key_line(text, "template_format"))
            raise _Skip
        return self.prompt_function(
            body, path, offset,
            name=name, plugin_name=plugin, description=description, input_variables=inputs,
            execution_settings=settings or None, output_schema=output_schema, service=service,
            needs_approval=needs_approval,
        )

    def front_matter(self, text: str, path: Path) -> tuple[dict[str, Any], str, int]:
        """(metadata, body, number of lines before the body)."""
        try:
            return parse_front_matter(text)
        except _FrontMatterError as exc:
            self.problem(path, exc.message, exc.line)
            raise _Skip from None

    def our_inputs(self, raw: Any, path: Path, text: str) -> list[InputVariable]:
        if raw is None:
            return []
        items: list[tuple[str, Any]]
        if isinstance(raw, Mapping):
            items = [(str(k), v) for k, v in raw.items()]
        elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            items = [(v, None) for v in raw]
        else:
            self.problem(path, "inputs must map each input name to its description or settings",
                         _key_line(text, "inputs"))
            return []
        out: list[InputVariable] = []
        for name, spec in items:

            def line(name: str = name) -> int | None:
                return _key_line(text, name)

            if not NAME_PATTERN.match(name):
                self.problem(path, f"invalid input name {name!r}", line())
                continue
            if spec is None:
                out.append(InputVariable(name))
                continue
            if isinstance(spec, str):
                out.append(InputVariable(name, description=spec))
                continue
            if not isinstance(spec, Mapping):
                self.problem(path, f"input {name!r}: expected a description or a mapping", line())
                continue
            unknown = sorted(str(k) for k in spec if k not in INPUT_KEYS)
            if unknown:
                self.problem(path, f"input {name!r}: unknown key(s) {', '.join(unknown)} "
                                   f"(expected: {', '.join(sorted(INPUT_KEYS))})", line())
                continue
            var = self.input_variable(name, spec, path, line, sk=False)
            if var is not None:
                out.append(var)
        return out

    def input_variable(self, name: str, spec: Mapping[str, Any], path: Path, line: Callable[[], int | None],
                       *, sk: bool) -> InputVariable | None:
        kind = spec.get("type")
        schema = spec.get("json_schema" if sk else "schema")
        if isinstance(schema, str) and sk:
            try:
                schema = json.loads(schema) if schema.strip() else None
            except json.JSONDecodeError as exc:
                self.problem(path, f"input {name!r}: json_schema is not valid JSON ({exc.msg})", line())
                return None
        if schema is not None and not isinstance(schema, dict):
            self.problem(path, f"input {name!r}: the schema must be a JSON schema object", line())
            return None
        if kind is None and schema:
            kind = schema.get("type") if isinstance(schema.get("type"), str) else None
        if kind is not None and kind not in JSON_TYPES:
            if sk:
                kind = None  # SK uses free-form type names (e.g. "string", "int"): not enforced
            else:
                self.problem(path, f"input {name!r}: unknown type {kind!r} (expected: {', '.join(sorted(JSON_TYPES))})",
                             line())
                return None
        required = spec.get("is_required" if sk else "required")
        trusted = spec.get("allow_dangerously_set_content" if sk else "trusted", False)
        for label, value in (("required", required), ("trusted", trusted)):
            if value is not None and not isinstance(value, bool):
                self.problem(path, f"input {name!r}: {label} must be true or false", line())
                return None
        var = InputVariable(name, description=str(spec.get("description") or ""), required=required,
                            type=kind, trusted=bool(trusted), schema=dict(schema or {}))
        if "default" in spec:
            var.default = spec["default"]
        return var

    def json_file(self, base: Path, value: str, what: str, source: Path) -> dict[str, Any] | None:
        return self.json_object(self.reference(base, value, what, source), what)

    def json_object(self, path: Path, what: str) -> dict[str, Any]:
        """The JSON object in `path`; invalid JSON or another value is a problem."""
        try:
            data = json.loads(self.read(path))
        except json.JSONDecodeError as exc:
            self.problem(path, f"invalid JSON: {exc.msg}", exc.lineno)
            raise _Skip from None
        if not isinstance(data, dict):
            self.problem(path, f"{what} must be a JSON object")
            raise _Skip
        return data

    def prompt_function(self, body: str, path: Path, offset: int, **kwargs: Any) -> PromptFunction:
        try:
            return PromptFunction(body, source=str(path), **kwargs)
        except KernelError as exc:
            message = str(exc)
            line: int | None = None
            prefix = f"{path}:"
            if message.startswith(prefix):
                match = _TEMPLATE_LINE.match(message, len(prefix) - 1)
                if match:
                    line = int(match.group(1)) + offset
                    message = message[match.end():]
                else:
                    message = message[len(prefix):].lstrip()
            self.problem(path, message, line)
            raise _Skip from None
        except Exception as exc:  # e.g. a default that does not fit the declared type
            self.problem(path, f"{type(exc).__name__}: {exc}")
            raise _Skip from None

    def sk_translate(self, source: str, path: Path, offset: int = 0) -> str:
        try:
            return translate(source)
        except SKTemplateError as exc:
            self.problem(path, exc.message, exc.line + offset)
            raise _Skip from None

    # -- Semantic Kernel's formats -------------------------------------------------------

    def sk_folder(self, plugin: str, name: str, folder: Path) -> PromptFunction:
        files = {entry_name: path for entry_name, path, is_dir in self.entries(folder) if not is_dir}
        prompt_path = files.get(SK_PROMPT_FILE)
        config_path = files.get(SK_CONFIG_FILE)
        if prompt_path is None:
            self.problem(folder, f"missing {SK_PROMPT_FILE}" + (
                "" if config_path else f" (a function folder holds {SK_PROMPT_FILE} and optionally {SK_CONFIG_FILE})"))
            if config_path is not None:  # still check it, to report everything at once
                self.json_object(config_path, SK_CONFIG_FILE)
            raise _Skip
        name = self.function_name(name, folder)
        config = self.json_object(config_path, SK_CONFIG_FILE) if config_path is not None else {}
        template = self.read(prompt_path)
        return self.sk_function(plugin, name, config, template, prompt_path, config_path or folder,
                                allowed=SK_CONFIG_KEYS, text=None)

    def sk_yaml(self, plugin: str, path: Path) -> PromptFunction:
        text = self.read(path)
        data = self.load_yaml(text, path, 0)
        if not isinstance(data, dict):
            self.problem(path, "an SK YAML prompt must be a mapping with at least 'template'")
            raise _Skip
        template = data.get("template")
        if not isinstance(template, str):
            message = "missing 'template' (the prompt text)" if template is None else "'template' must be text"
            self.problem(path, message, _key_line(text, "template"))
            raise _Skip
        raw_name = data.get("name", path.stem)
        name = self.function_name(str(raw_name), path)
        offset = (_key_line(text, "template") or 1) if _is_block_scalar(text) else 0
        return self.sk_function(plugin, name, data, template, path, path, allowed=SK_YAML_KEYS, text=text,
                                offset=offset)

    def sk_function(self, plugin: str, name: str, config: dict[str, Any], template: str, template_path: Path,
                    config_path: Path, *, allowed: frozenset[str], text: str | None, offset: int = 0) -> PromptFunction:
        def line_of(key: str) -> int | None:
            return _key_line(text, key) if text is not None else _json_key_line(config_path, key)

        problems_before = len(self.problems)
        for key in config:
            if key not in allowed:
                self.problem(config_path, f"unknown key {key!r}", line_of(key))
        template_format = config.get("template_format") or "semantic-kernel"
        if template_format == "handlebars":
            self.problem(config_path, "template_format 'handlebars' is not supported; use 'semantic-kernel' or "
                                      "'jinja2'", line_of("template_format"))
            raise _Skip
        if template_format not in ("semantic-kernel", "jinja2"):
            self.problem(config_path, f"unknown template_format {template_format!r} (expected 'semantic-kernel' or "
                                      "'jinja2')", line_of("template_format"))
            raise _Skip
        description = config.get("description") or ""
        trusted_all = config.get("allow_dangerously_set_content") is True
        inputs = self.sk_inputs(config, config_path, line_of, trusted_all)
        settings = self.sk_execution_settings(config, config_path, line_of)
        service = None
        default_services = config.get("default_services")
        if isinstance(default_services, list) and default_services and isinstance(default_services[0], str):
            service = default_services[0]
        if len(self.problems) > problems_before:
            raise _Skip
        body = self.sk_translate(template, template_path, offset) if template_format == "semantic-kernel" else template
        if template_format == "semantic-kernel":
            declared = {v.name for v in inputs}
            for var in _undeclared(body, str(template_path)):
                if var not in declared:  # SK renders a variable nobody passed as empty text
                    inputs.append(InputVariable(var, default="", trusted=trusted_all))
        return self.prompt_function(
            body, template_path, offset,
            name=name, plugin_name=plugin, description=str(description), input_variables=inputs,
            execution_settings=settings or None, service=service,
        )

    def sk_inputs(self, config: dict[str, Any], path: Path, line_of: Any, trusted_all: bool) -> list[InputVariable]:
        raw = config.get("input_variables")
        legacy = config.get("input")
        if raw is None and isinstance(legacy, dict):
            raw = [
                {"name": p.get("name"), "description": p.get("description", ""),
                 **({"default": p["defaultValue"]} if "defaultValue" in p else {})}
                for p in legacy.get("parameters") or [] if isinstance(p, dict)
            ]
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.problem(path, "input_variables must be a list", line_of("input_variables"))
            return []
        out: list[InputVariable] = []
        for item in raw:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                self.problem(path, "each input variable needs a 'name'", line_of("input_variables"))
                continue
            name = item["name"]

            def line(name: str = name) -> Any:
                return line_of(name)

            if not NAME_PATTERN.match(name):
                self.problem(path, f"invalid input variable name {name!r}", line())
                continue
            unknown = sorted(str(k) for k in item if k not in SK_INPUT_KEYS)
            if unknown:
                self.problem(path, f"input variable {name!r}: unknown key(s) {', '.join(unknown)}", line())
                continue
            var = self.input_variable(name, item, path, line, sk=True)
            if var is not None:
                var.trusted = var.trusted or trusted_all
                out.append(var)
        return out

    def sk_execution_settings(self, config: dict[str, Any], path: Path, line_of: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        completion = config.get("completion")
        if completion is not None:
            if not isinstance(completion, dict):
                self.problem(path, "completion must be an object", line_of("completion"))
            else:
                out["default"] = sk_settings(completion)
        raw = config.get("execution_settings")
        if raw is None:
            return out
        if not _is_mapping_of_mappings(raw):
            self.problem(path, "execution_settings must map a service id (or 'default') to settings",
                         line_of("execution_settings"))
            return out
        for service, values in raw.items():
            try:
                out[str(service)] = sk_settings(values)
            except ValueError as exc:
                self.problem(path, f"execution_settings.{service}: {exc}", line_of(str(service)))
        return out

    # -- native modules ------------------------------------------------------------------

    def module(self, plugin: str, path: Path) -> KernelPlugin:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            self.problem(path, f"file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
            raise _Skip
        digest = hashlib.sha1(str(Path(os.path.realpath(path))).encode(), usedforsecurity=False).hexdigest()[:12]
        module_name = f"_kernel_plugin_{plugin}_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            self.problem(path, "cannot import this file as a Python module")
            raise _Skip
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(module_name, None)
            self.problem(path, f"syntax error: {exc.msg}", exc.lineno)
            raise _Skip from None
        except (Exception, SystemExit) as exc:
            sys.modules.pop(module_name, None)
            line = None
            for frame in traceback.extract_tb(exc.__traceback__):
                if frame.filename == str(path):
                    line = frame.lineno
            self.problem(path, f"import failed: {type(exc).__name__}: {exc}", line)
            raise _Skip from None
        try:
            return KernelPlugin.from_object(module, name=plugin)
        except PluginError as exc:
            self.problem(path, str(exc))
            raise _Skip from None

    # -- YAML ------------------------------------------------------------------------

    def load_yaml(self, text: str, path: Path, offset: int) -> Any:
        try:
            return load_yaml(text)
        except _FrontMatterError as exc:
            self.problem(path, exc.message, None if exc.line is None else exc.line + offset)
            raise _Skip from None


class _FrontMatterError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def load_yaml(text: str) -> Any:
    """Plain data from YAML (safe loading only; JSON text takes the fast path)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass
    import yaml

    try:
        return yaml.load(text, Loader=_yaml())  # a SafeLoader class: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = str(getattr(exc, "problem", None) or exc)
        tag = re.search(r"tag '?(tag:yaml\.org,2002:python/[^'\s]*|![^'\s]*)", problem)
        if tag:
            raise _FrontMatterError(
                f"YAML tag {tag.group(1)!r} is not allowed: plugin files hold plain data only", line
            ) from None
        raise _FrontMatterError(f"invalid YAML: {problem}", line) from None


def parse_front_matter(text: str) -> tuple[dict[str, Any], str, int]:
    """Split a `.prompt` file into (front matter, body, lines before the body).

    The front matter is YAML between a first line `---` and the next line `---`; without
    it the whole file is the body.
    """
    if not text.startswith("---"):
        return {}, text, 0
    first_end = text.find("\n")
    if first_end < 0 or text[:first_end].rstrip() != "---":
        return {}, text, 0
    match = re.compile(r"^---[ \t]*$", re.MULTILINE).search(text, first_end + 1)
    if match is None:
        raise _FrontMatterError("front matter is not closed: add a line '---' after it", 1)
    header = text[first_end + 1 : match.start()]
    body_start = match.end() + 1 if text.startswith("\n", match.end()) else match.end()
    offset = text.count("\n", 0, body_start)
    if not header.strip():
        return {}, text[body_start:], offset
    try:
        meta = load_yaml(header)
    except _FrontMatterError as exc:
        raise _FrontMatterError(exc.message, None if exc.line is None else exc.line + 1) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise _FrontMatterError("front matter must be a mapping (key: value lines)", 2)
    return meta, text[body_start:], offset


def sk_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """SK execution settings in our vocabulary.

    `stop_sequences` becomes `stop`; `service_id`/`model_id`/`ai_model_id` are dropped (a
    service is chosen by its key); `extension_data` is merged; `function_choice_behavior`
    becomes the kernel's tool options: `function_choice` ("auto" | "required" | "none"),
    `functions` (`plugin.function` names) and `plugins`.
    """
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "stop_sequences":
            out["stop"] = value
        elif key in ("service_id", "model_id", "ai_model_id"):
            continue
        elif key == "extension_data" and isinstance(value, dict):
            out.update(sk_settings(value))
        elif key == "function_choice_behavior":
            out.update(_function_choice(value))
        else:
            out[key] = value
    return out


def _function_choice(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ValueError("function_choice_behavior must be a string or an object")
    kind = str(value.get("type", "auto")).lower()
    if kind not in ("auto", "required", "none"):
        raise ValueError(f"function_choice_behavior type {kind!r} is not one of auto, required, none")
    out: dict[str, Any] = {"function_choice": kind}
    filters = value.get("filters") or {}
    functions = list(value.get("functions") or []) + list(filters.get("included_functions") or [])
    if functions:
        out["functions"] = [str(f).replace("-", ".", 1) for f in functions]
    plugins = filters.get("included_plugins")
    if plugins:
        out["plugins"] = list(plugins)
    return out


def _is_mapping_of_mappings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in value.values())


def _key_line(text: str | None, key: str) -> int | None:
    """Line of the first `key:` (YAML) or `"key":` (JSON) in `text`; for messages only."""
    if not text:
        return None
    match = re.search(rf"^\s*(?:-\s*)?(?:name:\s*)?[\"']?{re.escape(key)}[\"']?\s*:?", text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _json_key_line(path: Path, key: str) -> int | None:
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    if not text:
        return None
    match = re.search(rf"\"{re.escape(key)}\"", text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _is_block_scalar(text: str) -> bool:
    return re.search(r"^template:\s*[|>][-+0-9]*\s*$", text, re.MULTILINE) is not None


def _undeclared(jinja_source: str, name: str) -> frozenset[str]:
    from .prompts import TEMPLATES

    try:
        return TEMPLATES.get(jinja_source, name).variables
    except KernelError:
        return frozenset()  # reported when the function is built


def load_plugins(root: Path) -> list[KernelPlugin]:
    """Load every plugin under `root` (see the module docstring for the layout rule).

    Raises `PluginLoadError` listing every problem found, with file and line.
    """
    loader = _Loader(Path(root))
    plugins = loader.load()
    if loader.problems:
        raise PluginLoadError(loader.problems, root=str(root))
    return plugins
