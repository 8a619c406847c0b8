"""A real PostgreSQL 16 with pgvector for the tests, started once per session by `pgserver`.

Registered in `tests/conftest.py` (`pytest_plugins`). When pgserver or psycopg is not
installed the fixture FAILS (it does not skip): CI installs the `[postgres]` extra and
pgserver, and a silently skipped store is an untested store.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class PostgresHandle:
    """The running server: its DSN, and a way to restart it (for reconnection tests)."""

    server: Any
    dsn: str

    def restart(self) -> None:
        """Stop the server (fast shutdown: connections are cut) and start it again."""
        from pgserver import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user)
        self.server.ensure_postgres_running()
        new = self.server.get_uri()
        assert new == self.dsn, "the restarted server must listen where it did before"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresHandle]:
    try:
        import pgserver
        import pgvector.psycopg  # noqa: F401
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        pytest.fail(
            f"PostgreSQL tests need {exc.name!r}: pip install pgserver "
            '"orchestration-kernel[postgres]"',
            pytrace=False,
        )
    # Not under pytest's basetemp: pytest resets `pytest-of-<user>` to mode 0700 (the
    # server runs as the `pgserver` system user when we are root, and must traverse the
    # path) and removes old basetemps while other sessions may still be running.
    pgdata = Path(tempfile.mkdtemp(prefix="kernel-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield PostgresHandle(server, server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn(postgres: PostgresHandle) -> str:
    return postgres.dsn
