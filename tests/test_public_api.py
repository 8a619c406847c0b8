"""The public API: `kernel.__all__` is complete and sorted, and every name is importable."""

from __future__ import annotations

import importlib
import pkgutil

import kernel


def _isort_style(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


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
    exported = {name for name in dir(kernel) if not name.startswith(("_", "@"))}
    submodules = {m.name for m in pkgutil.iter_modules(kernel.__path__)}
    assert exported - submodules - {"annotations", "TYPE_CHECKING", "Any"} <= set(kernel.__all__)
    locations = kernel._LOCATIONS  # type: ignore[attr-defined]
    assert set(locations) == set(kernel.__all__)
    for name in kernel.__all__:
        home = importlib.import_module(f"kernel.{locations[name]}")
        assert getattr(home, name) is getattr(kernel, name), name


def test_the_whole_error_tree_is_exported() -> None:
    errors = importlib.import_module("kernel.errors")
    tree = {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__}
    assert tree <= set(kernel.__all__)


def test_every_wing_exports_what_its_all_lists() -> None:
    for wing in ("chat", "memory", "planning", "plugin_folders", "prompts", "services"):
        package = importlib.import_module(f"kernel.{wing}")
        assert package.__all__ == sorted(package.__all__, key=_isort_style), wing
        for name in package.__all__:
            assert getattr(package, name) is not None, f"kernel.{wing}.{name}"


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        kernel.DoesNotExist  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "DoesNotExist" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
