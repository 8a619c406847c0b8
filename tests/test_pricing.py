"""Costs from usage and configured prices; unpriced is never zero."""

from __future__ import annotations

import pytest

from kernel.contents import Usage
from kernel.services.pricing import cost, find_price, format_cost
from kernel.settings import KernelSettings, Price

PRICES = {
    "gpt-4o": Price(input=2.5, output=10.0, cached_input=1.25),
    "gpt-4o-mini": Price(input=0.15, output=0.6),
    "claude-sonnet": Price(input=3.0, output=15.0, cached_input=0.3),
}


def test_cost_per_million_tokens() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000)
    assert cost(usage, "gpt-4o", PRICES) == pytest.approx(2.5 + 5.0)


def test_cached_input_tokens_use_the_cached_price() -> None:
    usage = Usage(input_tokens=1000, output_tokens=0, cached_tokens=400)
    assert cost(usage, "gpt-4o", PRICES) == pytest.approx((600 * 2.5 + 400 * 1.25) / 1e6)


def test_cached_tokens_without_a_cached_price_cost_the_input_price() -> None:
    usage = Usage(input_tokens=1000, cached_tokens=400)
    assert cost(usage, "gpt-4o-mini", PRICES) == pytest.approx(1000 * 0.15 / 1e6)


def test_unknown_model_is_unpriced_not_free() -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    assert cost(usage, "some-local-gguf", PRICES) is None
    assert cost(usage, "gpt-4o", {}) is None
    assert cost(usage, "", PRICES) is None
    assert format_cost(None) == "unpriced"


def test_zero_usage_of_a_priced_model_is_zero() -> None:
    assert cost(Usage(), "gpt-4o", PRICES) == 0.0
    assert format_cost(0.0) == "$0.000000"


def test_dated_snapshots_use_the_longest_matching_prefix() -> None:
    assert find_price("gpt-4o-2024-08-06", PRICES) is PRICES["gpt-4o"]
    assert find_price("gpt-4o-mini-2024-07-18", PRICES) is PRICES["gpt-4o-mini"]
    assert find_price("gpt-4oX", PRICES) is None  # not a snapshot of gpt-4o
    assert find_price("claude-sonnet@20250101", PRICES) is PRICES["claude-sonnet"]


def test_format_cost() -> None:
    assert format_cost(0.000123) == "$0.000123"
    assert format_cost(1.5) == "$1.500000"


def test_prices_from_configuration(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    config = tmp_path / "kernel.toml"
    config.write_text('[prices."my-model"]\ninput = 1.0\noutput = 2.0\n', encoding="utf-8")
    settings = KernelSettings.load(config)
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    assert cost(usage, "my-model", settings.prices) == pytest.approx(4.0)
