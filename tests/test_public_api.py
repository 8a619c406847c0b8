"""The public API: `kernel.__all__` is complete and sorted, and every name is importable."""

from __future__ import annotations

import importlib
import pkgutil

import kernel


def test_all_is_sorted_and_unique() -> None:
    assert kernel.__all__ == sorted(kernel.__all__)
    assert len(set(kernel.__all__)) == len(kernel.__all__)


def test_every_name_in_all_is_importable() -> None:
    for name in kernel.__all__:
        assert getattr(kernel, name) is not None, name
        namespace: dict[str, object] = {}
        exec(f"from kernel import {name}", namespace)
        assert namespace[name] is getattr(kernel, name)


def test_all_is_complete() -> None:
    """Every public class/function of the core modules that __init__ re-exports is listed,
    and nothing public in the package namespace is missing from __all__."""
    exported = {name for name in dir(kernel) if not name.startswith("_")}
    submodules = {m.name for m in pkgutil.iter_modules(kernel.__path__)}
    assert exported - submodules - {"annotations", "TYPE_CHECKING", "Any"} <= set(kernel.__all__)
    for name in kernel.__all__:
        obj = getattr(kernel, name)
        if name == "hookimpl":  # a pluggy marker instance, defined in kernel.hookspecs
            assert obj is importlib.import_module("kernel.hookspecs").hookimpl
            continue
        home = importlib.import_module(obj.__module__)
        assert home.__name__.startswith("kernel.") and getattr(home, name) is obj


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        kernel.DoesNotExist  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
