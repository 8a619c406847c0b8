"""Plain data from YAML and JSON: safe loading only (Python tags and other custom tags are
refused), no anchors or aliases, nesting bounded, with the line of the problem.

Anchors and aliases (`&a`, `*a`, `<<: *a`) are refused: an alias is a shared reference,
cheap to load but expanded in full by whatever walks the data later (JSON output, schema
processing, a model request), so a few hundred bytes of aliases to aliases ("billion
laughs") become gigabytes. Plugin files have no need for them. Nesting is bounded to
`MAX_DEPTH` levels, checked before the data is built, so that no deep document reaches a
recursive parser (`json.loads`, YAML's composer) and a `RecursionError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64
"""The deepest nesting of lists and mappings a plugin file may hold."""

_yaml_loader: Any = None
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _yaml() -> Any:
    """The safe YAML loader class (C implementation when available), imported once."""
    global _yaml_loader
    if _yaml_loader is None:
        import yaml

        _yaml_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return _yaml_loader


class DataError(Exception):
    """A YAML or front-matter problem, with its line (1-based) when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def _too_deep(line: int | None) -> DataError:
    return DataError(f"nesting is too deep (more than {MAX_DEPTH} levels of lists and mappings)", line)


def check_json_depth(text: str) -> None:
    """Raise DataError when the JSON text nests more than `MAX_DEPTH` levels (a scan of the
    brackets outside strings: nothing is parsed, nothing recurses)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(text.count("\n", 0, match.start()) + 1)
        elif token == "]" or token == "}":
            depth -= 1


def load_json(text: str) -> Any:
    """`json.loads` with the nesting bounded: DataError when too deep, and
    `json.JSONDecodeError` when the text is not JSON."""
    check_json_depth(text)
    return json.loads(text)


def _check_events(text: str) -> None:
    """Refuse anchors and aliases, and nesting deeper than `MAX_DEPTH`, from the parser's
    event stream (iterative: nothing is composed or built yet)."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=_yaml()):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent):
            raise DataError(f"YAML aliases are not allowed in plugin files (alias *{event.anchor}): "
                            "write the value out in full", line)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise DataError(f"YAML aliases are not allowed in plugin files (anchor &{anchor}): "
                            "write each value out in full", line)
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(line)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _may_hold_anchors_or_depth(text: str) -> bool:
    """Whether `_check_events` could refuse `text`: an anchor needs `&`, an alias `*`, and
    each level of nesting a line break or one of `[ { - : ?`, so a text with neither mark
    and fewer of those than `MAX_DEPTH` needs no second parse."""
    if "&" in text or "*" in text:
        return True
    levels = sum(text.count(mark) for mark in ("\n", "[", "{", "-", ":", "?"))
    return levels >= MAX_DEPTH


def load_yaml(text: str) -> Any:
    """Plain data from YAML (safe loading only; JSON text takes the fast path)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return load_json(text)
        except json.JSONDecodeError:
            pass
    import yaml

    try:
        if _may_hold_anchors_or_depth(text):  # else the event pass cannot find anything
            _check_events(text)
        return yaml.load(text, Loader=_yaml())  # a SafeLoader class: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = str(getattr(exc, "problem", None) or exc)
        if "maximum nesting depth" in problem:  # libyaml's own bound, met while scanning ahead
            raise _too_deep(line) from None
        tag = re.search(r"tag '?(tag:yaml\.org,2002:python/[^'\s]*|![^'\s]*)", problem)
        if tag:
            raise DataError(
                f"YAML tag {tag.group(1)!r} is not allowed: plugin files hold plain data only", line
            ) from None
        raise DataError(f"invalid YAML: {problem}", line) from None
