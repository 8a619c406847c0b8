"""Plain data from YAML: safe loading only (Python tags and other custom tags are refused),
with the line of the problem."""

from __future__ import annotations

import json
import re
from typing import Any

_yaml_loader: Any = None


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
            raise DataError(
                f"YAML tag {tag.group(1)!r} is not allowed: plugin files hold plain data only", line
            ) from None
        raise DataError(f"invalid YAML: {problem}", line) from None
