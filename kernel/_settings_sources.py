"""Where `KernelSettings` values come from: `KERNEL_*` environment variables (nested with
`__`), a `.env` file, the TOML configuration file; and the cache that makes a second
`KernelSettings.load()` cheap.

The rules are those pydantic-settings applied before (the kernel no longer imports it, which
saved about 100 ms of start-up): names are case-insensitive; a variable for a table or a
list (`KERNEL_SERVICES`, `KERNEL_PLUGIN_DIRS`) is JSON; `KERNEL_A__B__C` sets `c` in table
`b` of setting `a` (names lower-cased), merged over a JSON value of `KERNEL_A`; a `.env`
variable with the `KERNEL_` prefix that names no setting is an error (a typo), other `.env`
variables are ignored. Sources merge table by table, highest first: values given in code,
the environment, `.env`, the file.

Reading the sources is cached per process, keyed by everything they read: the working
directory, the `KERNEL_*` variables, and the identity (device, inode, size, modification
time) of the configuration file and of `.env`. Validation (and so the registration of the
secrets a configuration names) runs on every load.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from .errors import ConfigurationError

ENV_PREFIX = "kernel_"
NESTED = "__"
DOTENV_FILE = ".env"

_UNIONS = (Union, types.UnionType)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_complex(annotation: Any) -> bool:
    """A table, a list or a model: given as JSON in one variable."""
    origin = get_origin(annotation)
    if origin in _UNIONS:
        return False
    if _is_model(annotation) or annotation in (dict, list, tuple, set, frozenset):
        return True
    return isinstance(origin, type) and issubclass(origin, dict | list | tuple | set | frozenset)


def _union_is_complex(annotation: Any) -> bool:
    return get_origin(annotation) in _UNIONS and any(_is_complex(arg) for arg in get_args(annotation))


def _next_annotation(annotation: Any, key: str) -> Any:
    """The annotation of `key` inside `annotation` (a dict's values, a model's field,
    a union's first member that has it); None when unknown."""
    if annotation is None:
        return None
    origin = get_origin(annotation)
    if annotation is dict or (isinstance(origin, type) and issubclass(origin, dict)):
        args = get_args(annotation)
        return args[-1] if args else Any
    if origin in _UNIONS:
        for arg in get_args(annotation):
            found = _next_annotation(arg, key)
            if found is not None:
                return found
        return None
    if _is_model(annotation):
        for name, field in annotation.model_fields.items():
            if name.lower() == key:
                return field.annotation
    return None


def _decode(value: str, variable: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ConfigurationError(f"{variable.upper()}: not valid JSON ({exc})") from None


def deep_update(base: dict[str, Any], *updates: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `updates` merged in, table by table (later wins)."""
    merged = dict(base)
    for update in updates:
        for key, value in update.items():
            current = merged.get(key)
            if isinstance(current, dict) and isinstance(value, dict):
                merged[key] = deep_update(current, value)
            else:
                merged[key] = value
    return merged


def _explode(name: str, annotation: Any, variables: Mapping[str, str]) -> dict[str, Any]:
    """`KERNEL_NAME__A__B=value` -> {"a": {"b": value}} (JSON when `b` is a table or list)."""
    prefix = f"{ENV_PREFIX}{name}{NESTED}"
    result: dict[str, Any] = {}
    for variable, value in variables.items():
        if not variable.startswith(prefix):
            continue
        *keys, last = variable[len(prefix):].split(NESTED)
        target: dict[str, Any] = result
        current = annotation
        for key in keys:
            current = _next_annotation(current, key)
            nested = target.setdefault(key, {})
            if not isinstance(nested, dict):
                break
            target = nested
        else:
            leaf = _next_annotation(current, last)
            if value and leaf is not None:
                if _is_complex(leaf):
                    target[last] = _decode(value, variable)
                    continue
                if _union_is_complex(leaf):
                    try:
                        decoded = json.loads(value)
                    except ValueError:
                        decoded = value
                    target[last] = decoded if isinstance(decoded, list | dict) else value
                    continue
            target[last] = value
    return result


def values_from_variables(fields: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, Any]:
    """Settings values from lower-cased `kernel_*` variables; `fields`: name -> annotation."""
    data: dict[str, Any] = {}
    for name, annotation in fields.items():
        variable = ENV_PREFIX + name
        value = variables.get(variable)
        if _is_complex(annotation) or _union_is_complex(annotation):
            if value is None:
                exploded = _explode(name, annotation, variables)
                if exploded:
                    data[name] = exploded
                continue
            if _union_is_complex(annotation):
                try:
                    decoded: Any = json.loads(value)
                except ValueError:
                    data[name] = value
                    continue
            else:
                decoded = _decode(value, variable)
            data[name] = deep_update(decoded, _explode(name, annotation, variables)) \
                if isinstance(decoded, dict) else decoded
        elif value is not None:
            data[name] = value
    return data


def environment_variables() -> dict[str, str]:
    """The `KERNEL_*` variables of the environment, names lower-cased."""
    raw = getattr(os.environ, "_data", None)  # CPython's encoded copy: no decoding of every name
    if isinstance(raw, dict) and all(isinstance(key, bytes) for key in raw):
        names = [os.fsdecode(key) for key in raw if key[:7].upper() == b"KERNEL_"]
        return {name.lower(): os.environ[name] for name in names if name in os.environ}
    return {name.lower(): value for name, value in os.environ.items() if name[:7].lower() == ENV_PREFIX}


def read_dotenv(path: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Settings values from a `.env` file; a `KERNEL_` variable there that names no
    setting is an error."""
    from dotenv import dotenv_values

    raw = dotenv_values(path, encoding="utf-8")
    variables = {name.lower(): value for name, value in raw.items() if value is not None}
    data = values_from_variables(fields, variables)
    unknown = sorted(
        name for name, value in variables.items()
        if value and name.startswith(ENV_PREFIX) and not _claimed(name[len(ENV_PREFIX):], fields)
    )
    if unknown:
        raise ConfigurationError(
            f"invalid configuration ({path}): {', '.join(n.upper() for n in unknown)}: not a setting "
            f"(known: {', '.join(sorted(fields))})"
        )
    return data


def _claimed(rest: str, fields: Mapping[str, Any]) -> bool:
    if rest in fields:
        return True
    head, found, _ = rest.partition(NESTED)
    return bool(found) and head in fields and (_is_complex(fields[head]) or _union_is_complex(fields[head]))


def read_toml(path: Path, resolve: Callable[[dict[str, Any], Path], dict[str, Any]]) -> dict[str, Any]:
    """The TOML file's data, its relative paths resolved against its folder (`resolve`)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return resolve(data, path.absolute().parent)


def file_identity(path: Path | str | None) -> tuple[int, ...] | None:
    """What changes when a file changes (device, inode, size, mtime); None: no such file."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class SourceCache:
    """The merged values of the environment, `.env` and the file, by what they were read
    from. A file changed within the same clock tick as its last read, with the same size,
    is the one case a cache keyed by modification time misses: entries younger than two
    seconds are re-read."""

    MAX_ENTRIES = 32

    def __init__(self) -> None:
        self._entries: dict[tuple[Any, ...], dict[str, Any]] = {}

    def values(self, fields: Mapping[str, Any], path: Path | None,
               resolve: Callable[[dict[str, Any], Path], dict[str, Any]]) -> dict[str, Any]:
        variables = environment_variables()
        dotenv_id, file_id = file_identity(DOTENV_FILE), file_identity(path)
        key = (os.getcwd(), str(path) if path is not None else None, file_id, dotenv_id,
               tuple(sorted(variables.items())), id(fields))
        cached = self._entries.get(key)
        if cached is not None:
            return copy.deepcopy(cached) if cached else {}
        file_data = read_toml(path, resolve) if path is not None else {}
        dotenv_data = read_dotenv(Path(DOTENV_FILE), fields) if dotenv_id is not None else {}
        merged = deep_update(file_data, dotenv_data, values_from_variables(fields, variables))
        if not _recently_changed(file_id) and not _recently_changed(dotenv_id):
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = copy.deepcopy(merged)
        return merged

    def clear(self) -> None:
        self._entries.clear()


def _recently_changed(identity: tuple[int, ...] | None) -> bool:
    import time

    return identity is not None and time.time_ns() - identity[3] < 2_000_000_000


SOURCES = SourceCache()
