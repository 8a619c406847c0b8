"""Shared test configuration: fixture plugins of the suite."""

pytest_plugins = [
    "tests.fixtures_postgres",
    "tests.fixtures_llama",
]
