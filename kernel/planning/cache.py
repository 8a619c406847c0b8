"""Valid plans cached by what makes them valid: the goal, the allowed functions with their
schemas, and the input names; in memory per kernel, and optionally as JSON files."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PlanValidationError
from .model import Plan
from .validation import return_schema_of

if TYPE_CHECKING:
    from ..functions import KernelFunction
    from ..kernel import Kernel

__all__ = ["PlanCache", "plan_cache"]


class PlanCache:
    """Valid plans by key (goal, allowed functions and their schemas, input names); in
    memory, and as JSON files in `directory` when given."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._plans: dict[str, str] = {}

    @staticmethod
    def key(goal: str, functions: Sequence[KernelFunction], input_names: Iterable[str]) -> str:
        described = sorted(
            (fn.fully_qualified_name, fn.description, fn.parameters_schema, return_schema_of(fn)) for fn in functions
        )
        payload = json.dumps([goal, described, sorted(input_names)], sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def get(self, key: str) -> Plan | None:
        text = self._plans.get(key)
        if text is None and self.directory is not None:
            path = self.directory / f"{key}.json"
            if path.is_file():
                text = self._plans[key] = path.read_text(encoding="utf-8")
        if text is None:
            return None
        try:
            return Plan.from_json(text)
        except PlanValidationError:
            return None

    def put(self, key: str, plan: Plan) -> None:
        text = plan.to_json()
        self._plans[key] = text
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / f"{key}.json").write_text(text, encoding="utf-8")

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


_CACHES: weakref.WeakKeyDictionary[Any, PlanCache] = weakref.WeakKeyDictionary()


def plan_cache(kernel: Kernel) -> PlanCache:
    """The in-memory plan cache of this kernel."""
    cache = _CACHES.get(kernel)
    if cache is None:
        cache = _CACHES[kernel] = PlanCache()
    return cache
